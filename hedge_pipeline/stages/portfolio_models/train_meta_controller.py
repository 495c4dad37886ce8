"""Stage ``meta_controller``: the portfolio-level policy over the frozen specialists.

Trains :class:`~hedge_pipeline.stages.portfolio_models.controller.MetaController` through the shared
harness (checkpoints, exact resume, early stopping; the untrained controller, the netted
specialists mixed slightly towards BS delta, competes as epoch 0) on simulated training windows
of the portfolio, validated on fixed simulated validation windows; registers
``hedge-meta-controller`` with an ``upstream.hedge-specialist-<code>`` tag per code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hedge_pipeline.harness.lifecycle import StageResult, train_and_register
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter
from hedge_pipeline.harness.trainer import FitResult, TrainConfig, fit
from hedge_pipeline.hedging.comparison import Comparison, compare
from hedge_pipeline.registry.artifact import load_weights, save_artifact
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.config import MetaControllerInputs
from hedge_pipeline.stages.portfolio_models.controller import (
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.evaluation import (
    baseline_positions,
    score,
    specialist_rows,
    window_blocks,
)
from hedge_pipeline.stages.portfolio_models.report import EXTRA_COLUMNS, risk_table
from hedge_pipeline.stages.portfolio_models.task import PortfolioTask

STAGE = "meta_controller"


@dataclass
class MetaControllerModel:
    """The meta-controller's part of the lifecycle (``harness.lifecycle.StageModel``)."""

    inputs: shared.StageInputs
    registered_name: str = shared.META_MODEL
    result: FitResult | None = None
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    comparison: Comparison | None = None

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        cfg, portfolio = self.inputs.cfg, self.inputs.portfolio
        torch.manual_seed(cfg["seed"])
        meta = shared.new_meta(portfolio, cfg)
        task = PortfolioTask(
            portfolio.problem,
            shared.sampler(portfolio),
            self.inputs.objective,
            self.inputs.validation,
            cfg["steps_per_epoch"],
            cfg["paths_per_step"],
            cfg["seed"],
            frozen=portfolio.specialists,
        )
        train = TrainConfig(
            epochs=cfg["meta_epochs"],
            lr=cfg["learning_rate"],
            patience=cfg["patience"],
            seed=cfg["seed"],
            device="cpu",  # the simulator builds its tensors on the CPU
            validate_initial=True,
        )
        self.result = fit(meta, task, train, checkpoints, reporter)
        return meta

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        """The replayed test split: the controller against the baselines and the specialists."""
        portfolio, objective = self.inputs.portfolio, self.inputs.objective
        test, pp = portfolio.market.replay("test"), portfolio.problem
        with torch.no_grad():
            prop = proposals(pp, test, portfolio.specialists)
            held = (
                baseline_positions(pp, test)
                | specialist_rows(prop)
                | {"meta_controller": meta_rollout(pp, test, prop, model).hedge}
            )
        metrics, pnls = score(pp, test, held, objective.risk, objective.var_limit)
        self.test_metrics = metrics
        self.comparison = compare(
            metrics, pnls, window_blocks(test), STAGE, seed=self.inputs.cfg["seed"]
        )
        return StageResult(
            {f"test_replay_{h}_{k}": v for h, row in metrics.items() for k, v in row.items()},
            f"test ES10 (replay) {metrics['meta_controller']['es10']:.4g} vs specialists "
            f"{metrics['specialists']['es10']:.4g}; {self.comparison.headline}",
            {"strongest_baseline": self.comparison.baseline},
        )

    def save(self, model: nn.Module, out: Path) -> Path:
        portfolio, cfg = self.inputs.portfolio, self.inputs.cfg
        spec = shared.MetaControllerSpec.of(
            portfolio, model, cfg, var_limit=self.inputs.objective.var_limit
        )
        return save_artifact(model, spec, out)

    def load(self, directory: Path) -> nn.Module:
        meta = shared.MetaControllerSpec.read(directory).meta.build()
        meta.load_state_dict(load_weights(directory))
        return meta

    def probe(self, model: nn.Module) -> torch.Tensor:
        """The netted positions on the fixed validation windows."""
        pp, validation = self.inputs.portfolio.problem, self.inputs.validation
        prop = proposals(pp, validation, self.inputs.portfolio.specialists)
        return meta_rollout(pp, validation, prop, model).hedge.underlying


def run(session: TrainingSession) -> None:
    with shared.open_stage(session, MetaControllerInputs) as inputs:
        portfolio, objective = inputs.portfolio, inputs.objective
        inputs.identity["upstream"] = portfolio.upstream
        model = MetaControllerModel(inputs)
        done = train_and_register(session, inputs.client, STAGE, model, inputs.identity, inputs.cfg)
        if done is None:  # another torchrun rank: rank 0 registers and reports
            return
        result, metrics = model.result, model.test_metrics
        assert result is not None and model.comparison is not None
        session.report(
            metadata={  # the verdict first: the UI lists entries in this order
                **model.comparison.headline_metadata(),
                **done.metadata(),
                "codes": list(portfolio.market.codes),
                "upstream_specialists": portfolio.versions,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "var_limit": objective.var_limit,
                "evaluation_test_replay": {
                    "raw_value": model.comparison.table(metrics, EXTRA_COLUMNS),
                    "type": "md",
                },
                "all_metrics_test_replay": {"raw_value": risk_table(metrics), "type": "md"},
            },
            data_version=done.data_version,
        )
