"""Stage ``cnn_lstm``: train the market-state model, evaluate it, register ``hedge-cnn-lstm``.

Extras (from the ``cnn_lstm_model`` asset): ``dataset`` (a ``market_state_frame`` Parquet),
``config`` (sizes and budget, merged by the ``cnn_lstm_model`` asset) and ``identity`` (Dagster
run, asset, data and code versions). Trains with ``harness.trainer.fit`` (checkpointed under
``data/checkpoints/cnn_lstm/<dataset>-<config>/``, so a retry resumes), optionally after an
Optuna search, evaluates validation and test against the persistence forecast, registers the
weights with the docs/design.md §8 tags and alias ``candidate``, reloads the registered version and
checks it predicts exactly what the trained model does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn

from hedge_pipeline.harness.curves import save_training_curves
from hedge_pipeline.harness.distributed import distributed
from hedge_pipeline.harness.lifecycle import StageResult, train_and_register
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter, png_markdown
from hedge_pipeline.harness.trainer import FitResult, fit
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME, load_model, save_model
from hedge_pipeline.stages.cnn_lstm.config import CnnLstmInputs, model_config, train_config
from hedge_pipeline.stages.cnn_lstm.hpo import search
from hedge_pipeline.stages.cnn_lstm.market_state import (
    SequenceData,
)
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig, CnnLstmTask, evaluate_split

STAGE = "cnn_lstm"


@dataclass
class CnnLstmModel:
    """The CNN-LSTM's part of the lifecycle (``harness.lifecycle.StageModel``)."""

    data: SequenceData
    cfg: dict[str, Any]
    world_size: int
    registered_name: str = MODEL_NAME
    result: FitResult | None = None
    model_cfg: CnnLstmConfig | None = None
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    curves_md: str = ""

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        """The Optuna search first when ``hpo_trials`` > 0 (its trials are child runs of the
        stage's run), then the final fit with the best trial's parameters."""
        cfg = self.cfg
        if cfg["hpo_trials"] > 0:
            if self.world_size > 1:
                raise ValueError("hpo_trials > 0 runs in a single process; set devices=1")
            cfg = search(reporter.session, self.data, cfg, reporter.client, reporter.run_id)
        train = train_config(cfg)
        self.model_cfg = model_config(cfg)
        torch.manual_seed(cfg["seed"])
        model = CnnLstm(self.model_cfg)
        task = CnnLstmTask(self.data, batch_size=cfg["batch_size"], seed=cfg["seed"])
        self.result = fit(model, task, train, checkpoints, reporter)
        return self.result.model.cpu().eval()

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        """Validation and test against persistence and the training mean; the curves."""
        cfg, data = self.cfg, self.data
        self.val = evaluate_split(model, data, "val", cfg["mc_samples"], cfg["seed"])
        self.test = evaluate_split(model, data, "test", cfg["mc_samples"], cfg["seed"])
        assert self.result is not None
        curves = save_training_curves(
            self.result.history, scratch / "training_curves.png", MODEL_NAME
        )
        self.curves_md = png_markdown(curves, "training curves")
        test = self.test
        return StageResult(
            {f"val_{k}": v for k, v in self.val.items()}
            | {f"test_{k}": v for k, v in test.items()},
            f"test MSE {test['mse_rv']:.3e} vs persistence {test['baseline_mse_rv']:.3e} "
            f"and the training mean {test['train_mean_mse_rv']:.3e}",
            artifacts=[curves],
        )

    def save(self, model: nn.Module, out: Path) -> Path:
        assert self.model_cfg is not None
        return save_model(model, self.model_cfg, self.data, self.cfg["horizon"], out)

    def load(self, directory: Path) -> nn.Module:
        return load_model(directory)[0]

    def probe(self, model: nn.Module) -> torch.Tensor:
        """The predictions on the test windows."""
        return model(self.data.split("test").x)


def run(session: TrainingSession) -> None:
    inputs = CnnLstmInputs.parse(session.extras)
    cfg = inputs.config.as_dict()
    frame = pl.read_parquet(inputs.dataset)
    data = SequenceData.build(frame, cfg["sequence_length"], max_windows=cfg["max_windows"])
    session.info(
        f"cnn_lstm: {', '.join(f'{s} {len(data.split(s))}' for s in ('train', 'val', 'test'))} "
        f"windows of {cfg['sequence_length']} bars, {data.n_features} features"
    )
    with distributed() as dist:
        client = registry.client() if session.is_main else None
        stage = CnnLstmModel(data, cfg, dist.world_size)
        done = train_and_register(session, client, STAGE, stage, inputs.identity_dict(), cfg)
        if done is None:  # another torchrun rank: rank 0 registers and reports
            return
    result, test = stage.result, stage.test
    assert result is not None
    last = result.history[-1]
    session.report(
        metadata={
            **done.metadata(),
            "epochs_run": len(result.history),
            "start_epoch": result.start_epoch,
            "best_epoch": result.best_epoch,
            "stopped": result.stopped,
            "device": result.device,
            "samples_per_second": float(last["samples_per_second"]),
            "windows": {s: len(data.split(s)) for s in ("train", "val", "test")},
            "val": {k: v for k, v in stage.val.items() if v == v},
            "test": {k: v for k, v in test.items() if v == v},
            "beats_persistence_on_test_mse": bool(test["mse_rv"] < test["baseline_mse_rv"]),
            "beats_train_mean_on_test_mse": bool(test["mse_rv"] < test["train_mean_mse_rv"]),
            "reloads_identically": True,  # train_and_register raised otherwise
            "checkpoint_dir": str(done.checkpoints),
            "training_curves": {"raw_value": stage.curves_md, "type": "md"},
        },
        data_version=done.data_version,
    )
