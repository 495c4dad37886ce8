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

import hashlib
import json
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import torch

from hedge_pipeline.harness.curves import save_training_curves
from hedge_pipeline.harness.distributed import distributed
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import (
    TrackingReporter,
    checkpoint_path,
    identity_tags,
    log_metrics,
    png_markdown,
    tracking_run,
)
from hedge_pipeline.harness.trainer import FitResult, TrainConfig, fit
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.config import CnnLstmStageConfig, model_config, train_config
from hedge_pipeline.stages.cnn_lstm.market_state import (
    FEATURE_COLUMNS,
    TARGET_COLUMNS,
    SequenceData,
    Standardizer,
)
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig, CnnLstmTask, evaluate_split

MODEL_NAME = "hedge-cnn-lstm"
STAGE = "cnn_lstm"


def stage_hash(train: TrainConfig, model: CnnLstmConfig, cfg: dict[str, Any]) -> str:
    """Hash of everything that shapes the trained weights besides the data."""
    payload = {
        "train": train.config_hash(),
        "model": asdict(model),
        "batch_size": cfg["batch_size"],
        "max_windows": cfg["max_windows"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def save_model(
    model: CnnLstm, config: CnnLstmConfig, data: SequenceData, horizon: int, out: Path
) -> Path:
    """The registered folder: state dict plus everything needed to rebuild and feed the model."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / registry.WEIGHTS_FILE)
    spec = {
        "model": asdict(config),
        "feature_columns": list(FEATURE_COLUMNS),
        "target_columns": list(TARGET_COLUMNS),
        "horizon": horizon,
        "inputs": data.inputs.to_dict(),
        "targets": data.targets.to_dict(),
    }
    (out / "config.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out


def load_model(directory: Path) -> tuple[CnnLstm, dict[str, Any]]:
    """Rebuild a registered CNN-LSTM (eval mode) and its spec (standardizers, columns, horizon)."""
    spec = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    model = CnnLstm(CnnLstmConfig(**spec["model"]))
    state = torch.load(directory / registry.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    spec["inputs"] = Standardizer.from_dict(spec["inputs"])
    spec["targets"] = Standardizer.from_dict(spec["targets"])
    return model, spec


def _fit(
    data: SequenceData, cfg: dict[str, Any], reporter: TrackingReporter, identity: dict[str, Any]
) -> tuple[FitResult, CnnLstmConfig, Path]:
    train = train_config(cfg)
    model_cfg = model_config(cfg)
    torch.manual_seed(cfg["seed"])
    model = CnnLstm(model_cfg)
    task = CnnLstmTask(data, batch_size=cfg["batch_size"], seed=cfg["seed"])
    checkpoint_dir = checkpoint_path(STAGE, identity, stage_hash(train, model_cfg, cfg))
    result = fit(model, task, train, checkpoint_dir, reporter)
    return result, model_cfg, checkpoint_dir


def run(session: TrainingSession) -> None:
    extras = session.extras
    cfg = CnnLstmStageConfig.parse(extras["config"]).as_dict()
    identity = extras["identity"]
    frame = pl.read_parquet(extras["dataset"])
    data = SequenceData.build(frame, cfg["sequence_length"], max_windows=cfg["max_windows"])
    session.info(
        f"cnn_lstm: {', '.join(f'{s} {len(data.split(s))}' for s in ('train', 'val', 'test'))} "
        f"windows of {cfg['sequence_length']} bars, {data.n_features} features"
    )
    with distributed() as dist, ExitStack() as stack:
        client = run_id = None
        tags = identity_tags(identity, stage_hash(train_config(cfg), model_config(cfg), cfg))
        if session.is_main:
            client = registry.client()
            run_id = stack.enter_context(tracking_run(client, MODEL_NAME, tags, cfg))
        if cfg["hpo_trials"] > 0:
            if dist.world_size > 1:
                raise ValueError("hpo_trials > 0 runs in a single process; set devices=1")
            from hedge_pipeline.stages.cnn_lstm.hpo import search

            cfg = search(session, data, cfg, client, run_id)
        reporter = TrackingReporter(session, client, run_id)
        result, model_cfg, checkpoint_dir = _fit(data, cfg, reporter, identity)
        if not session.is_main:
            return
        _register_and_report(
            session, client, run_id, tags, data, cfg, result, model_cfg, checkpoint_dir
        )


def _register_and_report(
    session, client, run_id, tags, data, cfg, result: FitResult, model_cfg, checkpoint_dir
):
    model = result.model.cpu().eval()
    seed = cfg["seed"]
    val = evaluate_split(model, data, "val", cfg["mc_samples"], seed)
    test = evaluate_split(model, data, "test", cfg["mc_samples"], seed)
    for prefix, metrics in (("val", val), ("test", test)):
        log_metrics(client, run_id, {f"{prefix}_{k}": v for k, v in metrics.items()})
    with tempfile.TemporaryDirectory(prefix="cnn-lstm-") as tmp:
        curves = save_training_curves(result.history, Path(tmp) / "training_curves.png", MODEL_NAME)
        client.log_artifact(run_id, str(curves))
        model_dir = save_model(model, model_cfg, data, cfg["horizon"], Path(tmp) / "model")
        version = registry.register_version(client, MODEL_NAME, run_id, model_dir, tags)
        curves_md = png_markdown(curves, "training curves")
    reloaded, _ = load_model(registry.load_version(client, MODEL_NAME, version.version).directory)
    x = data.split("test").x
    with torch.no_grad():
        identical = bool(torch.equal(model(x), reloaded(x)))
    if not identical:
        raise RuntimeError(
            f"{MODEL_NAME} v{version.version} does not reload to identical predictions"
        )
    beats = test["mse_rv"] < test["baseline_mse_rv"]
    session.info(
        f"registered {MODEL_NAME} v{version.version} (alias candidate): "
        f"test MSE {test['mse_rv']:.3e} vs persistence {test['baseline_mse_rv']:.3e} "
        f"and the training mean {test['train_mean_mse_rv']:.3e}"
    )
    last = result.history[-1]
    session.report(
        metadata={
            "registered_model": MODEL_NAME,
            "version": int(version.version),
            "mlflow_run_id": run_id,
            "weights_sha256": version.tags["weights_sha256"],
            "epochs_run": len(result.history),
            "start_epoch": result.start_epoch,
            "best_epoch": result.best_epoch,
            "stopped": result.stopped,
            "device": result.device,
            "samples_per_second": float(last["samples_per_second"]),
            "windows": {s: len(data.split(s)) for s in ("train", "val", "test")},
            "val": {k: v for k, v in val.items() if v == v},
            "test": {k: v for k, v in test.items() if v == v},
            "beats_persistence_on_test_mse": bool(beats),
            "beats_train_mean_on_test_mse": bool(test["mse_rv"] < test["train_mean_mse_rv"]),
            "reloads_identically": identical,
            "checkpoint_dir": str(checkpoint_dir),
            "training_curves": {"raw_value": curves_md, "type": "md"},
        },
        data_version=version.tags["weights_sha256"][:16],
    )
