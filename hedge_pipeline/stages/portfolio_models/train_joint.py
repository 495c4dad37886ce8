"""Stage ``joint``: the meta-controller and its specialists fine-tuned together.

For each of ``members`` seeds: start from the registered meta-controller and the specialists,
run the curriculum (:data:`.joint.CURRICULUM`) through the shared
harness with a learning rate per component, gradient clipping per component and optionally
alternating updates, on the member's own block bootstrap of the training windows
(:func:`member_portfolio`); register each result as a version of ``hedge-joint`` (tags
``upstream.hedge-meta-controller`` and ``upstream.hedge-specialist-<code>``, ``seed``).

Resume: every phase checkpoints through the harness, and a completed phase leaves its weights
in ``phase-<i>-<name>.pt``; a retried run loads the last completed phase and goes on from the
next, mid-phase from the harness's own checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hedge_pipeline.harness import distributed
from hedge_pipeline.harness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hedge_pipeline.harness.lifecycle import StageResult, train_and_register
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter
from hedge_pipeline.harness.trainer import TrainConfig, fit
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import load_weights, save_artifact
from hedge_pipeline.runtime.markdown import markdown_table
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.config import JointInputs
from hedge_pipeline.stages.portfolio_models.ensemble import member_positions
from hedge_pipeline.stages.portfolio_models.joint import CURRICULUM, JointModel
from hedge_pipeline.stages.portfolio_models.task import PortfolioTask

STAGE = "joint"


@dataclass
class JointMember:
    """One seed's joint model: its part of the lifecycle (``harness.lifecycle.StageModel``)."""

    inputs: shared.StageInputs
    cfg: dict[str, Any]  # the stage's config with this member's ``member`` and ``seed``
    meta_state: dict[str, torch.Tensor]
    meta_spec: shared.MetaControllerSpec
    registered_name: str = shared.JOINT_MODEL
    validation: dict[str, float] = field(default_factory=dict)

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        model = shared.joint_skeleton(self.inputs.portfolio, self.meta_spec)
        model.meta.load_state_dict(self.meta_state)
        inputs = self.inputs
        self.validation = _curriculum(
            model,
            member_portfolio(inputs.portfolio, self.cfg["seed"]),
            inputs.objective,
            inputs.validation,
            self.cfg,
            checkpoints,
            reporter,
        )
        return model

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        """The validation metrics of the final weights (the ensemble weights members by them)."""
        val = self.validation
        return StageResult(
            {f"val_{k}": v for k, v in val.items()},
            f"seed {self.cfg['seed']}, validation ES10 {val['val_es10']:.4g}",
        )

    def spec(self) -> shared.JointSpec:
        joint = shared.JointMemberInfo(member=self.cfg["member"], seed=self.cfg["seed"])
        return shared.JointSpec(**dict(self.meta_spec), joint=joint)

    def save(self, model: nn.Module, out: Path) -> Path:
        return save_artifact(model, self.spec(), out)

    def load(self, directory: Path) -> nn.Module:
        return shared.load_joint(self.inputs.portfolio, directory)

    def probe(self, model: nn.Module) -> torch.Tensor:
        """The netted positions on the fixed validation windows."""
        pp, validation = self.inputs.portfolio.problem, self.inputs.validation
        return member_positions(pp, validation, model).underlying


def run(session: TrainingSession) -> None:
    with shared.open_stage(session, JointInputs) as inputs:
        extras = inputs.extras
        assert isinstance(extras, JointInputs)
        cfg, identity, client = inputs.cfg, inputs.identity, inputs.client
        meta = registry.load_version(client, shared.META_MODEL, extras.meta_controller_version)
        meta_state = load_weights(meta.directory)
        meta_spec = shared.MetaControllerSpec.read(meta.directory)
        # The meta-controller's version names the specialists it started from.
        identity["upstream"] = {shared.META_MODEL: meta.version}
        members = []
        for member in range(cfg["members"]):
            member_cfg = cfg | {"member": member, "seed": cfg["seed"] + member}
            model = JointMember(inputs, member_cfg, meta_state, meta_spec)
            # The version's `seed` tag is the member's seed (with the default seed 0, its
            # index), so `hedge run --seed N`'s members read N, N+1, as their params do.
            done = train_and_register(
                session,
                client,
                STAGE,
                model,
                identity,
                member_cfg,
                {"seed": str(member_cfg["seed"])},
            )
            if done is None:  # another torchrun rank: rank 0 registers and reports
                continue
            members.append(
                {
                    "version": int(done.version.version),
                    "seed": member_cfg["seed"],
                    **model.validation,
                }
            )
        session.report(
            metadata={
                "registered_model": shared.JOINT_MODEL,
                "versions": [m["version"] for m in members],
                "members": {"raw_value": _members_table(members), "type": "md"},
                "upstream_meta_controller_version": meta.version,
                "upstream_specialists": inputs.portfolio.versions,
                "curriculum": [phase.name for phase in CURRICULUM],
            },
            data_version="-".join(str(m["version"]) for m in members),
        )


def member_portfolio(portfolio: shared.Portfolio, seed: int) -> shared.Portfolio:
    """The portfolio that the member of ``seed`` trains on: the same books and specialists,
    with its own block bootstrap of the training windows
    (:meth:`.market.PortfolioMarket.bootstrapped`), so that members differ by more than the
    order of their batches. It is a function of the seed alone, so a resumed member trains on
    the same windows, and the spec's seed names them."""
    return replace(portfolio, market=portfolio.market.bootstrapped(seed + shared.BOOTSTRAP_SEED))


def _members_table(members: list[dict[str, Any]]) -> str:
    """One row per registered member: version, seed and its validation figures."""
    columns = list(members[0]) if members else ["version", "seed"]
    rows = ([f"{m[c]:.4g}" if isinstance(m[c], float) else m[c] for c in columns] for m in members)
    return markdown_table(columns, rows, right_from=0)


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
    if cfg["alternate"] and distributed.launched_world_size() > 1:
        # Each alternating step leaves one part without gradients, which DDP cannot reduce.
        raise ValueError(
            "joint_model: alternate=true cannot train under torchrun (HEDGE_DEVICES>1): each "
            "step leaves one part without gradients to synchronize; set alternate=false or "
            "train on one device"
        )
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
            lr=cfg["joint_learning_rate"],
            patience=cfg["patience"],
            seed=cfg["seed"] + 1000 * index,
            device="cpu",
            validate_initial=True,  # a phase keeps the previous weights unless it improves them
            component_lr=(
                ("meta", cfg["joint_learning_rate"]),
                ("specialists", cfg["specialist_learning_rate"]),
            ),
            clip_per_component=True,
        )
        fit(model, task, train, folder / f"phase-{index}", reporter)
        if distributed.is_main_process():  # the ranks hold the same weights after fit
            folder.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"model": model.state_dict()}, done)
        distributed.barrier()  # no rank looks for the phase's file before it exists
    assert task is not None
    return task.evaluate(model, torch.device("cpu"))
