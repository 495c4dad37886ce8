"""Stage ``ensemble``: joint models weighted by validation risk, evaluated, promoted or not.

Loads the joint models (``joint_versions``), weights them by their risk on the fixed
validation windows (:func:`~hedge_pipeline.stages.portfolio_models.ensemble.risk_weights`), sets the
turbulence guard at a quantile of the turbulence index over the training windows and keeps it
only if it does not raise the ensemble's ES10 on the validation windows (measured in the
default world it cost 0.0055–0.0064, benchmarks/stages.md §7), and scores
on the held-out test windows, replayed and simulated, every baseline and every stage:
specialists alone (each code trading for itself), specialists netted, the meta-controller,
the best joint model, the ensemble, and the ensemble with the CNN-LSTM's forecast and
uncertainty held at their training means (the ablation of what the CNN-LSTM tells it); the
same rows on the validation windows (in-sample for the epochs and weights they chose), and
every stage against the one it builds on (:func:`.report.stage_differences`). Two
readings of the tail go with the table (:mod:`.evaluation`): BS
delta traded for free (``bs_delta_without_costs``: how far cost savings alone could go) and,
for BS delta and the ensemble, the worst 10 % of windows by front code (``tail_by_front``).

Promotion gate (docs/design.md §8): the new version gets ``champion`` only when, on the
simulated test and on the replayed test alike, its ES10 beats the strongest baseline of that
test (the lowest ES10 of the textbook hedges that trade the same instruments:
``hedging.comparison.strongest_baseline``) with a 95 % interval of the difference that
excludes 0, and its replayed ES10 beats the current champion's (re-scored on the same
windows when it covers the same codes) by ``promotion_margin``; otherwise it stays
``candidate``. Every condition it fails is in the reason, in its tags (``promotion``,
``promotion_reason``) and the metadata. The report
(:mod:`.report`: the verdict, every hedger against the strongest baseline with intervals, the
left tail and the paired view; JSON, markdown, PNGs) is logged under ``report/`` of the
version's MLflow run for ``hedge evaluate``; its headline figures are numeric metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn

from hedge_pipeline.harness.lifecycle import StageResult, train_and_register
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter
from hedge_pipeline.hedging.code_market import CONTEXT
from hedge_pipeline.hedging.comparison import Comparison, PairedDifference
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import ArtifactSpecError, load_weights, save_artifact
from hedge_pipeline.stages.portfolio_models import report
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.config import EnsembleInputs
from hedge_pipeline.stages.portfolio_models.controller import (
    MetaController,
    code_features,
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.ensemble import (
    HedgeEnsemble,
    guard_if_it_helps,
    member_positions,
    risk_weights,
    without_forecasts,
)
from hedge_pipeline.stages.portfolio_models.evaluation import (
    baseline_positions,
    front_codes,
    score,
    specialist_rows,
    tail_by_front,
    window_blocks,
)
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes
from hedge_pipeline.stages.portfolio_models.task import PortfolioTask

FORECAST_COLUMNS = tuple(CONTEXT.index(c) for c in ("rv_forecast", "rv_forecast_std"))
TURBULENCE_COLUMN = CONTEXT.index("turbulence")
TAIL_HEDGERS = ("bs_delta", "ensemble")
STAGE = "ensemble"


@dataclass
class EnsembleModel:
    """The ensemble's part of the lifecycle (``harness.lifecycle.StageModel``): "training" is
    weighting the loaded joint models by validation risk and setting the turbulence guard."""

    inputs: shared.StageInputs
    members: list[JointModel]
    member_versions: list[int]
    member_spec: shared.JointSpec
    meta: MetaController
    registered_name: str = shared.ENSEMBLE_MODEL
    spec: shared.EnsembleSpec | None = None
    val_risk: list[float] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)
    tails: dict[str, Any] = field(default_factory=dict)
    guard_share: dict[str, float] = field(default_factory=dict)
    guard_es10: dict[str, float] = field(default_factory=dict)
    decision: tuple[str, str] = ("", "")
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    stages: dict[str, dict[str, dict[str, PairedDifference]]] = field(default_factory=dict)
    report_metadata: dict[str, Any] = field(default_factory=dict)

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        inputs = self.inputs
        pp, cfg = inputs.portfolio.problem, inputs.cfg
        task = PortfolioTask(
            pp, shared.sampler(inputs.portfolio), inputs.objective, inputs.validation, 1, 2
        )
        self.val_risk = [task.evaluate(m, torch.device("cpu"))["val_loss"] for m in self.members]
        weights = risk_weights(self.val_risk)
        with torch.no_grad():
            _, context = code_features(pp, inputs.portfolio.market.replay("train"))
        threshold = float(
            torch.quantile(
                context[..., TURBULENCE_COLUMN].double().flatten(), cfg["turbulence_quantile"]
            )
        )
        ensemble, self.guard_es10 = guard_if_it_helps(
            pp, inputs.validation, self.members, weights, threshold, TURBULENCE_COLUMN
        )
        return ensemble

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        """Every baseline and stage on the held-out test windows, replayed and simulated; the
        promotion gate; the report files (module docstring)."""
        inputs = self.inputs
        portfolio, objective, cfg, pp = (
            inputs.portfolio,
            inputs.objective,
            inputs.cfg,
            inputs.portfolio.problem,
        )
        means = _forecast_means(portfolio, portfolio.market.replay("train"))
        best = self.members[int(torch.argmax(model.weights))]
        episodes = {
            # The windows that picked every stage's epochs and weighted the members: in-sample
            # for that choice, scored beside the test splits to show what it saw.
            "validation": inputs.validation,
            "test_replay": portfolio.market.replay("test"),
            "test_simulated": portfolio.market.sample(
                cfg["eval_paths"],
                torch.Generator().manual_seed(cfg["seed"] + shared.TEST_SEED),
                "test",
            ),
        }
        pnls, blocks, labels = {}, {}, {}
        for split, ep in episodes.items():
            with torch.no_grad():
                prop = proposals(pp, ep, portfolio.specialists)
                held_ensemble, guard = model.positions(pp, ep)
                held = (
                    baseline_positions(pp, ep)
                    | specialist_rows(prop)
                    | {
                        "meta_controller": meta_rollout(pp, ep, prop, self.meta).hedge,
                        "joint": member_positions(pp, ep, best),
                        "ensemble": held_ensemble,
                        "ensemble_without_cnn_lstm": model.positions(
                            pp, without_forecasts(ep, FORECAST_COLUMNS, means)
                        )[0],
                    }
                )
            self.tables[split], pnls[split] = score(
                pp, ep, held, objective.risk, objective.var_limit, costless=("bs_delta",)
            )
            self.tails[split] = {
                name: tail_by_front(pnls[split][name], front_codes(ep), pp.codes)
                for name in TAIL_HEDGERS
            }
            self.guard_share[split] = float(guard.double().mean())
            blocks[split] = window_blocks(ep)
            labels[split] = pl.DataFrame(
                {
                    "front_code": [pp.codes[i] for i in front_codes(ep).tolist()],
                    "block": blocks[split].numpy(),
                }
            )
        self.comparisons = report.compare(self.tables, pnls, blocks, seed=cfg["seed"])
        self.stages = {
            split: report.stage_differences(pnls[split], blocks[split], c.baseline, cfg["seed"])
            for split, c in self.comparisons.items()
        }
        champion = _champion_es10(inputs.client, portfolio, episodes["test_replay"], objective)
        decision, reason = _gate(
            self.comparisons, self.tables["test_replay"], champion, cfg["promotion_margin"]
        )
        self.decision = (decision, reason)
        self.spec = shared.EnsembleSpec.of(
            portfolio,
            self.meta,
            cfg,
            ensemble=shared.EnsembleInfo(
                joint_versions=self.member_versions,
                weights=model.weights.tolist(),
                validation_risk=self.val_risk,
                turbulence_threshold=model.turbulence_threshold,
                turbulence_quantile=cfg["turbulence_quantile"],
                guard=model.turbulence_column is not None,
                guard_validation_es10=self.guard_es10,
            ),
            member_spec=self.member_spec,
        )
        document = {
            "promotion": decision,
            "promotion_reason": reason,
            "ensemble": self.spec.ensemble.model_dump(),
            "codes": self.spec.codes,
            "guard_share": self.guard_share,
            "evaluation": self.tables,
            "tail_by_front": self.tails,
        }
        self.report_metadata = report.write(
            scratch / "report",
            self.decision,
            self.comparisons,
            self.tables,
            self.tails,
            pnls,
            labels,
            document,
            self.stages,
        ).metadata
        replay = self.comparisons["test_replay"]
        headlines = {
            f"{split}_ensemble_es10_{key}": value
            for split, c in self.comparisons.items()
            for key, value in (
                ("vs_strongest_baseline", c.of_model.difference),
                ("vs_strongest_baseline_low", c.of_model.low),
                ("vs_strongest_baseline_high", c.of_model.high),
                ("of_strongest_baseline", c.of_model.baseline),
            )
        }
        return StageResult(
            {
                f"{split}_{h}_{k}": v
                for split, table in self.tables.items()
                for h, row in table.items()
                for k, v in row.items()
            }
            | headlines,
            f"test (replay) {replay.headline}",
            {
                "promotion": decision,
                "promotion_reason": reason,
                "strongest_baseline": replay.baseline,
                "evaluation": replay.headline,
            },
        )

    def save(self, model: nn.Module, out: Path) -> Path:
        assert self.spec is not None, "evaluate() sets the spec"
        return save_artifact(model, self.spec, out)

    def load(self, directory: Path) -> nn.Module:
        return load_ensemble(self.inputs.portfolio, directory, shared.EnsembleSpec.read(directory))

    def probe(self, model: nn.Module) -> torch.Tensor:
        """The ensemble's netted positions on the fixed validation windows."""
        return model.positions(self.inputs.portfolio.problem, self.inputs.validation)[0].underlying


def run(session: TrainingSession) -> None:
    with shared.open_stage(session, EnsembleInputs) as inputs:
        extras = inputs.extras
        assert isinstance(extras, EnsembleInputs)
        client, portfolio = inputs.client, inputs.portfolio
        members, member_versions, member_specs = [], [], []
        for ref in extras.joint_versions:
            loaded = registry.load_version(client, shared.JOINT_MODEL, ref)
            members.append(shared.load_joint(portfolio, loaded.directory).eval())
            member_specs.append(shared.JointSpec.read(loaded.directory))
            member_versions.append(loaded.version)
        meta_loaded = registry.load_version(
            client, shared.META_MODEL, extras.meta_controller_version
        )
        meta = shared.MetaControllerSpec.read(meta_loaded.directory).meta.build()
        meta.load_state_dict(load_weights(meta_loaded.directory))
        # The joints name the meta-controller, which names the specialists (hedge models show).
        inputs.identity["upstream"] = {
            f"{shared.JOINT_MODEL}/{k}": v for k, v in enumerate(member_versions)
        }
        stage = EnsembleModel(inputs, members, member_versions, member_specs[-1], meta)
        done = train_and_register(session, client, STAGE, stage, inputs.identity, inputs.cfg)
        if done is None:  # another torchrun rank: rank 0 registers and reports
            return
        version, (decision, reason) = done.version, stage.decision
        if decision == "promoted":
            client.set_registered_model_alias(
                shared.ENSEMBLE_MODEL, registry.CHAMPION, version.version
            )
        (session.info if decision == "promoted" else session.warning)(
            f"{shared.ENSEMBLE_MODEL} v{version.version}: {decision}: {reason}"
        )
        ensemble, replay = done.model, stage.comparisons["test_replay"]
        session.report(
            metadata={  # the verdict first: the UI lists entries in this order
                "promotion": decision,
                "promotion_reason": reason,
                **replay.headline_metadata(),
                **done.metadata(),
                **{f"guard_share_{split}": v for split, v in stage.guard_share.items()},
                "joint_versions": member_versions,
                "member_weights": ensemble.weights.tolist(),
                "turbulence_threshold": ensemble.turbulence_threshold,
                "turbulence_guard": ensemble.turbulence_column is not None,
                **{f"validation_es10_{k}": v for k, v in stage.guard_es10.items()},
                **stage.report_metadata,
            },
            data_version=done.data_version,
        )


def load_ensemble(
    portfolio: shared.Portfolio, directory: Path, spec: shared.EnsembleSpec
) -> HedgeEnsemble:
    """A registered ensemble (``spec`` read from ``directory``) rebuilt around this
    portfolio's specialists."""
    info = spec.ensemble
    members = [shared.joint_skeleton(portfolio, spec.member_spec) for _ in info.joint_versions]
    ensemble = ensemble_of(members, info)
    ensemble.load_state_dict(load_weights(directory))
    return ensemble


def ensemble_of(members: list[JointModel], info: shared.EnsembleInfo) -> HedgeEnsemble:
    """The ensemble a registered spec describes, around these (untrained) members: its
    weights, and its turbulence guard if it kept one."""
    column = TURBULENCE_COLUMN if info.guard else None
    return HedgeEnsemble(members, torch.tensor(info.weights), info.turbulence_threshold, column)


def _forecast_means(portfolio: shared.Portfolio, ep: PortfolioEpisodes) -> list[float]:
    """Training means of the forecast columns over the training windows' (``ep``) codes."""
    values = []
    for column in FORECAST_COLUMNS:
        total = sum(
            float((b.context[..., column] * ep.present[:, c, None]).sum())
            for c, b in enumerate(ep.books)
        )
        count = float(ep.present.sum()) * portfolio.problem.n_steps
        values.append(total / max(count, 1.0))
    return values


def _champion_es10(client, portfolio, test, objective) -> tuple[int, float | None] | None:
    """The current champion's test ES10 on these windows (None: no champion yet).

    A champion built on other weekly codes (a code joined or left since), or on specialists of
    another shape (a hedge option where there was none, another network), cannot be rebuilt
    around this portfolio's specialists, so it has no ES10 here: ``(version, None)``. The stage
    must still register the new ensemble (as a candidate, see ``_gate``) rather than fail:
    failing would leave every portfolio retrain after such a change without an ensemble.
    """
    try:
        loaded = registry.load_version(client, shared.ENSEMBLE_MODEL, registry.CHAMPION)
    except registry.UnknownModelVersionError:
        return None
    try:
        spec = shared.EnsembleSpec.read(loaded.directory)
    except ArtifactSpecError:  # a folder of an older release: not rebuildable here
        return loaded.version, None
    if spec.codes != list(portfolio.market.codes):
        return loaded.version, None
    try:
        champion = load_ensemble(portfolio, loaded.directory, spec)
    except RuntimeError:  # torch's answer to weights of another shape than the skeleton's
        return loaded.version, None
    with torch.no_grad():
        held = champion.positions(portfolio.problem, test)[0]
        bs = baseline_positions(portfolio.problem, test)["bs_delta"]
    metrics, _ = score(
        portfolio.problem,
        test,
        {"bs_delta": bs, "champion": held},
        objective.risk,
        objective.var_limit,
    )
    return loaded.version, metrics["champion"]["es10"]


GATE_SPLITS = {"test_simulated": "simulated test", "test_replay": "replayed test"}


def _gate(
    comparisons: dict[str, Comparison],
    table: dict[str, dict[str, float]],
    champion: tuple[int, float | None] | None,
    margin: float,
) -> tuple[str, str]:
    """("promoted" | "candidate", why): the module docstring's gate.

    Every failed condition is said, so that an operator reads at once what stands in the way
    (a champion on other weekly codes cannot be compared on one test set: promoting over it is
    an operator's call). A passed gate names the baselines and the margins it cleared.
    """
    failed, cleared = [], []
    for split, label in GATE_SPLITS.items():
        c = comparisons[split]
        row = c.of_model
        numbers = (
            f"ES10 {row.hedger:.4g} vs {c.baseline} {row.baseline:.4g}, Δ {row.difference:+.3g}"
            f" (95 % interval {row.low:+.3g} to {row.high:+.3g})"
        )
        if row.high < 0:
            cleared.append(f"{c.baseline} on the {label}: {numbers}")
        else:
            why = "is worse than" if row.low > 0 else "does not beat"
            failed.append(f"{label}: {why} the strongest baseline {c.baseline}: {numbers}")
    new = table["ensemble"]["es10"]
    if champion is not None and champion[1] is None:
        failed.append(
            f"champion v{champion[0]} covers other weekly codes or hedges with other "
            "specialists: the two cannot be compared on one test set; promote by hand if it "
            "should replace the champion"
        )
    elif champion is not None and not new <= champion[1] * (1.0 - margin):
        failed.append(
            f"replayed test ES10 {new:.4g} does not beat champion v{champion[0]}'s "
            f"{champion[1]:.4g} by {margin:.1%}"
        )
    elif champion is not None:
        cleared.append(f"champion v{champion[0]}'s {champion[1]:.4g} by at least {margin:.1%}")
    if failed:
        return "candidate", "; ".join(failed)
    return "promoted", "beats " + "; ".join(cleared)
