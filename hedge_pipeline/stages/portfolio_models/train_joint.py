"""Stage ``joint``: the meta-controller and its specialists fine-tuned together.

For each of ``members`` seeds: start from the registered meta-controller and the specialists,
run the curriculum (:data:`.joint.CURRICULUM`) through the shared
harness with a learning rate per component, gradient clipping per component and optionally
alternating updates; register each result as a version of ``hedge-joint`` (tags
``upstream.hedge-meta-controller`` and ``upstream.hedge-specialist-<code>``, ``seed``).

Resume: every phase checkpoints through the harness, and a completed phase leaves its weights
in ``phase-<i>-<name>.pt``; a retried run loads the last completed phase and goes on from the
next, mid-phase from the harness's own checkpoint.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from hedge_pipeline.harness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
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
from hedge_pipeline.stages.portfolio_models.joint import CURRICULUM, JointModel
from hedge_pipeline.stages.portfolio_models.task import PortfolioTask

STAGE = "joint"


def run(session: TrainingSession) -> None:
    extras = session.extras
    with shared.open_stage(session) as stage:
        cfg, identity, client = stage.cfg, stage.identity, stage.client
        portfolio, validation, objective = stage.portfolio, stage.validation, stage.objective
        meta = registry.load_version(client, shared.META_MODEL, extras["meta_controller_version"])
        meta_state, meta_spec = shared.load_state(meta.directory)
        # The meta-controller's version names the specialists it started from.
        identity["upstream"] = {shared.META_MODEL: meta.version}
        members = []
        for member in range(cfg["members"]):
            model = shared.joint_skeleton(portfolio, meta_spec)
            model.meta.load_state_dict(meta_state)
            member_cfg = cfg | {"member": member, "seed": cfg["seed"] + member}
            tags = identity_tags(identity, shared.config_hash(member_cfg)) | {"seed": str(member)}
            with ExitStack() as stack:
                run_id = stack.enter_context(
                    tracking_run(client, shared.JOINT_MODEL, tags, member_cfg)
                )
                reporter = TrackingReporter(session, client, run_id)
                folder = checkpoint_path(STAGE, identity, shared.config_hash(member_cfg))
                val = _curriculum(
                    model, portfolio, objective, validation, member_cfg, folder, reporter
                )
                log_metrics(client, run_id, {f"val_{k}": v for k, v in val.items()})
                spec = meta_spec | {"joint": {"member": member, "seed": member_cfg["seed"]}}
                with tempfile.TemporaryDirectory(prefix="joint-") as tmp:
                    model_dir = shared.save_model(model, spec, Path(tmp) / "model")
                    version = registry.register_version(
                        client, shared.JOINT_MODEL, run_id, model_dir, tags
                    )
            session.info(
                f"registered {shared.JOINT_MODEL} v{version.version} (seed {member_cfg['seed']}): "
                f"validation ES10 {val['val_es10']:.4g}"
            )
            members.append({"version": int(version.version), "seed": member_cfg["seed"], **val})
        session.report(
            metadata={
                "registered_model": shared.JOINT_MODEL,
                "versions": [m["version"] for m in members],
                "members": {"raw_value": members, "type": "json"},
                "upstream_meta_controller_version": meta.version,
                "upstream_specialists": portfolio.versions,
                "curriculum": [phase.name for phase in CURRICULUM],
            },
            data_version="-".join(str(m["version"]) for m in members),
        )


def _curriculum(
    model: JointModel,
    portfolio: shared.Portfolio,
    objective,
    validation,
    cfg: dict[str, Any],
    folder: Path,
    reporter: TrackingReporter,
) -> dict[str, float]:
    """Every phase in turn (module docstring); the validation metrics of the final weights."""
    task = None
    for index, phase in enumerate(CURRICULUM):
        done = folder / f"phase-{index}-{phase.name}.pt"
        task = PortfolioTask(
            portfolio.problem,
            shared.sampler(portfolio, phase.vol_scale),
            objective,
            validation,
            cfg["steps_per_epoch"],
            cfg["paths_per_step"],
            cfg["seed"] + 1000 * index,
            alternate=cfg["alternate"],
            train_problem=shared.at_costs(portfolio.problem, phase.cost_scale),
        )
        if done.exists():
            try:
                model.load_state_dict(load_checkpoint(done)["model"])
                reporter.info(f"phase {index} ({phase.name}) completed earlier: resuming after it")
                continue
            except CheckpointError as exc:
                reporter.warning(f"{exc}; training phase {index} again")
        reporter.info(
            f"phase {index} ({phase.name}): costs x{phase.cost_scale}, vol x{phase.vol_scale}"
        )
        train = TrainConfig(
            epochs=cfg["joint_epochs_per_phase"],
            lr=cfg["learning_rate"],
            patience=cfg["patience"],
            seed=cfg["seed"] + 1000 * index,
            device="cpu",
            validate_initial=True,  # a phase keeps the previous weights unless it improves them
            component_lr=(
                ("meta", cfg["learning_rate"]),
                ("specialists", cfg["specialist_learning_rate"]),
            ),
            clip_per_component=True,
        )
        fit(model, task, train, folder / f"phase-{index}", reporter)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"model": model.state_dict()}, done)
    assert task is not None
    return task.evaluate(model, torch.device("cpu"))
