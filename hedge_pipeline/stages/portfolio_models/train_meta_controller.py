"""Stage ``meta_controller``: the portfolio-level policy over the frozen specialists.

Trains :class:`~hedge_pipeline.stages.portfolio_models.controller.MetaController` through the shared
harness (checkpoints, exact resume, early stopping; the untrained controller, the netted
specialists mixed slightly towards BS delta, competes as epoch 0) on simulated training windows
of the portfolio, validated on fixed simulated validation windows; registers
``hedge-meta-controller`` with an ``upstream.hedge-specialist-<code>`` tag per code.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import torch

from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import (
    TrackingReporter,
    checkpoint_path,
    identity_tags,
    log_metrics,
    tracking_run,
)
from hedge_pipeline.harness.trainer import TrainConfig, fit
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.controller import meta_rollout, proposals
from hedge_pipeline.stages.portfolio_models.evaluation import (
    baseline_positions,
    score,
    specialist_rows,
)
from hedge_pipeline.stages.portfolio_models.task import PortfolioTask

STAGE = "meta_controller"


def run(session: TrainingSession) -> None:
    with ExitStack() as stack, shared.open_stage(session) as stage:
        cfg, identity, client = stage.cfg, stage.identity, stage.client
        portfolio, validation, objective = stage.portfolio, stage.validation, stage.objective
        identity["upstream"] = portfolio.upstream
        tags = identity_tags(identity, shared.config_hash(cfg))
        run_id = stack.enter_context(tracking_run(client, shared.META_MODEL, tags, cfg))
        reporter = TrackingReporter(session, client, run_id)
        torch.manual_seed(cfg["seed"])
        meta = shared.new_meta(portfolio, cfg)
        task = PortfolioTask(
            portfolio.problem,
            shared.sampler(portfolio),
            objective,
            validation,
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
        folder = checkpoint_path(STAGE, identity, shared.config_hash(cfg))
        result = fit(meta, task, train, folder, reporter)
        test = portfolio.market.replay("test")
        pp = portfolio.problem
        with torch.no_grad():
            prop = proposals(pp, test, portfolio.specialists)
            held = (
                baseline_positions(pp, test)
                | specialist_rows(prop)
                | {"meta_controller": meta_rollout(pp, test, prop, meta).hedge}
            )
        metrics, _ = score(pp, test, held, objective.risk, objective.var_limit)
        log_metrics(
            client,
            run_id,
            {f"test_replay_{h}_{k}": v for h, row in metrics.items() for k, v in row.items()},
        )
        spec = shared.meta_spec(portfolio, meta, cfg) | {"var_limit": objective.var_limit}
        with tempfile.TemporaryDirectory(prefix="meta-") as tmp:
            model_dir = shared.save_model(meta, spec, Path(tmp) / "model")
            version = registry.register_version(client, shared.META_MODEL, run_id, model_dir, tags)
        row = metrics["meta_controller"]
        session.info(
            f"registered {shared.META_MODEL} v{version.version}: test ES10 (replay) "
            f"{row['es10']:.4g} vs specialists {metrics['specialists']['es10']:.4g}, "
            f"BS delta {metrics['bs_delta']['es10']:.4g}"
        )
        session.report(
            metadata={
                "registered_model": shared.META_MODEL,
                "version": int(version.version),
                "mlflow_run_id": run_id,
                "weights_sha256": version.tags["weights_sha256"],
                "codes": list(portfolio.market.codes),
                "upstream_specialists": portfolio.versions,
                "best_epoch": result.best_epoch,
                "epochs_run": len(result.history),
                "var_limit": objective.var_limit,
                "test_replay": metrics,
                "risk_table_test_replay": {
                    "raw_value": shared.markdown_risk_table(metrics),
                    "type": "md",
                },
            },
            data_version=version.tags["weights_sha256"][:16],
        )
