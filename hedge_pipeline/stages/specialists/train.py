"""Stage ``specialist``: train one weekly code's hedging agent, evaluate it, register it.

Extras (from the ``specialist_agents`` asset): ``features`` (the code's ``greeks_features``
rows of its book options), ``selection`` (its ``portfolio_selection`` book rows),
``cnn_lstm_version`` (the registered ``hedge-cnn-lstm`` version whose forecasts enter the
observations; its inputs are rebuilt here with the horizon it was trained for), ``config`` (a
``config.SpecialistStageConfig``, validated before any data is read) and ``identity``.

Steps: load the CNN-LSTM version (checksum verified) and forecast the code's realized vol at
every bar; build the code's market (``hedging.code_market``: calibrated on the training
split); train by ``algorithm``:

* ``deep_hedging``: pathwise gradients through the simulator, in ``harness.trainer.fit`` (the
  harness: checkpoints under ``data/checkpoints/specialist/``, exact resume after a kill,
  early stopping on fixed simulated episodes started from validation-split bars, divergence
  monitor). With ``objective: per_state`` (default) the loss is the criterion's gain over BS
  delta from each start state (``objective.PerStateObjective``:
  ``paths_per_state`` episodes per state); with ``pooled``, the criterion of the whole batch,
  whose tail holds only the riskiest states (near the money). The policy starts as the
  Black–Scholes delta hedge (zero-width band, or zero correction for the MLP head, whose
  correction is gated by the book's gamma) with its inputs scaled on simulated training
  episodes, and the untrained policy competes as epoch 0;
* ``ppo``: ``hedging.ppo.train_ppo`` on the same sampler, for the same budget of paths
  (its own loop: no checkpoints, a retry starts it again);

then score the policy and the baselines on the code's held-out test windows, replayed and
simulated, register ``hedge-specialist-<weekly_code>`` (tag ``upstream.hedge-cnn-lstm``), and
report a risk table, a P&L histogram and a policy-behaviour plot as Dagster metadata.
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
from hedge_pipeline.harness.lifecycle import Registered, StageResult, train_and_register
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.threads import torch_threads
from hedge_pipeline.harness.tracking import (
    TrackingReporter,
    png_markdown,
)
from hedge_pipeline.harness.trainer import TrainConfig, fit
from hedge_pipeline.hedging.code_market import CodeMarket
from hedge_pipeline.hedging.comparison import Comparison, compare, time_blocks
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.evaluation import (
    Evaluation,
    baselines,
    evaluate,
    wins_by_group,
)
from hedge_pipeline.hedging.plots import plot_pnl_histogram, plot_policy_behaviour
from hedge_pipeline.hedging.ppo import train_ppo
from hedge_pipeline.hedging.simulator import (
    Episodes,
    market_features,
    rollout,
)
from hedge_pipeline.quant.risk import parse_criterion
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime.markdown import markdown_table
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME as CNN_LSTM_MODEL
from hedge_pipeline.stages.cnn_lstm.artifact import CnnLstmSpec, load_model
from hedge_pipeline.stages.cnn_lstm.market_state import SequenceData, market_state_frame
from hedge_pipeline.stages.cnn_lstm.model import predictions
from hedge_pipeline.stages.specialists.artifact import (
    code_market,
    load_policy,
    model_name,
    save_policy,
)
from hedge_pipeline.stages.specialists.config import SpecialistInputs
from hedge_pipeline.stages.specialists.objective import PerStateObjective
from hedge_pipeline.stages.specialists.task import HedgingTask
from hedge_pipeline.stages.specialists.warm_start import WarmStart, bar_tags, find_predecessor

STAGE = "specialist"
POLICY = "policy"  # the trained hedger's row in every risk table
# Seeds of the evaluation draws, far from any training seed.
_VAL_SEED, _TEST_SEED, _TWIN_SEED = 7_000_003, 9_000_011, 11_000_027
# Simulated twins of the replayed test split (CodeMarket.simulated_replays): how often the
# policy beats BS delta on a test of the replay's size, which one replayed path cannot say.
REPLAY_TWINS = 200


def rv_forecasts(
    model: nn.Module, spec: CnnLstmSpec, frame: pl.DataFrame, mc_samples: int, seed: int
) -> pl.DataFrame:
    """The CNN-LSTM's realized-vol forecast and MC-dropout std at every bar that ends a window
    of the registered sequence length (``ts, prediction, std``), annualized like its target."""
    data = SequenceData.build(
        frame,
        spec.model.sequence_length,
        inputs=spec.inputs.standardizer(),
        targets=spec.targets.standardizer(),
    )
    parts = [
        predictions(model, data, split, max(mc_samples, 2), seed)
        for split in ("train", "val", "test")
        if len(data.split(split))
    ]
    if not parts:
        raise ValueError("the code has no bar with a full CNN-LSTM input window")
    return (
        pl.concat(parts)
        .filter(pl.col("name") == "target_rv")
        .select("ts", "prediction", "std")
        .sort("ts")
    )


def book_forecasts(
    features: pl.DataFrame,
    selection: pl.DataFrame,
    cnn_model: nn.Module,
    cnn_spec: CnnLstmSpec,
    mc_samples: int,
    seed: int,
) -> pl.DataFrame:
    """:func:`rv_forecasts` of the code's book: the CNN-LSTM reads the book's rows only, as it
    was trained (not the hedge option's)."""
    book = selection.filter(~pl.col("is_hedge_instrument"))
    book_rows = features.filter(pl.col("option_symbol").is_in(book["option_symbol"].implode()))
    frame = market_state_frame(book_rows, book, horizon=cnn_spec.horizon)
    return rv_forecasts(cnn_model, cnn_spec, frame, mc_samples, seed)


def at_training_mean(forecasts: pl.DataFrame, bounds: dict) -> pl.DataFrame:
    """``forecasts`` with every bar's forecast and std replaced by their means over the
    training split (``bounds``: the selection's ``train_start``/``train_end``): the same
    columns carrying no information, so that a lineage trained on them measures what the
    CNN-LSTM's forecast adds (``forecasts='training_mean'``). Only training bars decide the
    constant, as only they may.

    >>> import datetime as dt
    >>> day = [dt.datetime(2025, 7, d) for d in (1, 2, 3)]
    >>> f = pl.DataFrame({"ts": day, "prediction": [0.1, 0.3, 0.9], "std": [0.01, 0.03, 0.2]})
    >>> at_training_mean(f, {"train_start": day[0], "train_end": day[1]}).rows()[2][1:]
    (0.2, 0.02)
    """
    ts = pl.col("ts")
    start, end = (
        pl.lit(bounds[k]).cast(forecasts.schema["ts"]) for k in ("train_start", "train_end")
    )
    training = forecasts.filter(ts.is_between(start, end))
    if training.is_empty():
        raise ValueError("no CNN-LSTM forecast falls on a training bar: no training mean")
    return forecasts.with_columns(
        prediction=pl.lit(training["prediction"].mean()).cast(forecasts.schema["prediction"]),
        std=pl.lit(training["std"].mean()).cast(forecasts.schema["std"]),
    )


def run(session: TrainingSession) -> None:
    inputs = SpecialistInputs.parse(session.extras)
    cfg = inputs.config.as_dict()
    identity = inputs.identity_dict()
    code = identity["weekly_code"]
    name = model_name(code)
    with distributed() as dist:
        client = registry.client()
        cnn = registry.load_version(client, CNN_LSTM_MODEL, inputs.cnn_lstm_version)
        cnn_model, spec = load_model(cnn.directory)
        features = pl.read_parquet(inputs.features)
        selection = pl.read_parquet(inputs.selection)
        forecasts = book_forecasts(
            features, selection, cnn_model, spec, cfg["mc_samples"], cfg["seed"]
        )
        if cfg["forecasts"] == "training_mean":
            forecasts = at_training_mean(forecasts, selection.row(0, named=True))
        market = code_market(features, selection, forecasts, cfg)
        history = market.history
        if market.problem.instrument is not None and cfg["algorithm"] == "ppo":
            raise ValueError(
                "algorithm 'ppo' hedges with the underlying alone; set hedge_option=false "
                "or use deep_hedging for delta-gamma"
            )
        session.info(
            f"{name}: book {', '.join(history.symbols)}; hedge option "
            + f"{market.history.instrument_symbol if market.problem.instrument else 'none'}; "
            + "calibration "
            + ", ".join(f"{k} {v:.4g}" for k, v in market.calibration.as_dict().items())
            + f"; episodes of {market.n_steps} x {market.k} bars, start bars "
            + ", ".join(f"{s} {market.starts(s).size}" for s in ("train", "val", "test"))
            + f"; CNN-LSTM v{cnn.version}"
        )
        identity["upstream"] = {**identity.get("upstream", {}), CNN_LSTM_MODEL: cnn.version}
        tags = bar_tags(features)
        warm = None
        if cfg["warm_start"] and cfg["algorithm"] == "deep_hedging":
            found = find_predecessor(client, code, tags, cfg, market.problem)
            if isinstance(found, str):
                session.info(f"{name}: starts from BS delta: {found}")
                tags["warm_start"] = "none"
            else:
                session.info(f"{name}: starts from its predecessor {found.tag}")
                warm, tags["warm_start"] = found, found.tag
        model = SpecialistModel(market, forecasts, cfg, dist.world_size, name, warm)
        done = train_and_register(session, client, STAGE, model, identity, cfg, tags)
        if done is None:  # another torchrun rank: rank 0 registers and reports
            return
        _report(session, done, model)


@dataclass
class SpecialistModel:
    """The specialist's part of the lifecycle (``harness.lifecycle.StageModel``)."""

    market: CodeMarket
    forecasts: pl.DataFrame
    cfg: dict[str, Any]
    world_size: int
    registered_name: str
    warm: WarmStart | None = None  # the predecessor's weights to start from (warm_start)
    trained: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Evaluation] = field(default_factory=dict)
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    twins: dict[str, float] = field(default_factory=dict)
    markdown: dict[str, str] = field(default_factory=dict)

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        with torch_threads(self.cfg["num_threads"]):
            policy, self.trained = _train(
                self.market, self.cfg, reporter, checkpoints, self.world_size, self.warm
            )
        return policy

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        """Every test set's risk table, the policy against the strongest baseline with an
        interval, how often it wins the replay's simulated twins, the figures."""
        name, market = self.registered_name, self.market
        self.tables, self.comparisons, self.twins = _risk_tables(market, self.cfg, model)
        metrics = {
            f"{split}_{hedger}_{k}": v
            for split, evaluation in self.tables.items()
            for hedger, row in evaluation.metrics.items()
            for k, v in row.items()
        } | {f"test_replay_twins_{k}": v for k, v in self.twins.items()}
        for split, result in self.comparisons.items():
            row = result.of_model
            metrics |= {
                f"{split}_policy_es10_vs_strongest_baseline": row.difference,
                f"{split}_policy_es10_vs_strongest_baseline_low": row.low,
                f"{split}_policy_es10_vs_strongest_baseline_high": row.high,
                f"{split}_strongest_baseline_es10": row.baseline,
            }
        figures = {
            "pnl_histogram": plot_pnl_histogram(
                self.tables["test_replay"], f"{name}: test P&L (replay)"
            ),
            "policy_behaviour": plot_policy_behaviour(
                self.tables["test_replay"], POLICY, f"{name}: policy on test windows (replay)"
            ),
        }
        artifacts = []
        for key, figure in figures.items():
            figure.savefig(scratch / f"{key}.png", dpi=90)
            artifacts.append(scratch / f"{key}.png")
            self.markdown[key] = png_markdown(scratch / f"{key}.png", key.replace("_", " "))
        if self.trained["history"]:
            curves = save_training_curves(self.trained["history"], scratch / "curves.png", name)
            artifacts.append(curves)
            self.markdown["training_curves"] = png_markdown(curves, "training curves")
        summary = (
            f"test (replay) {self.comparisons['test_replay'].headline}; test (simulated) Δ ES10 "
            f"{self.comparisons['test_simulated'].of_model.difference:+.3g}; beats BS delta on "
            f"{self.twins['share']:.0%} of {REPLAY_TWINS} simulated twins of the test replay"
        )
        tags = {
            "strongest_baseline": self.comparisons["test_replay"].baseline,
            "evaluation": self.comparisons["test_replay"].headline,
        }
        return StageResult(metrics, summary, tags, artifacts=artifacts)

    def save(self, model: nn.Module, out: Path) -> Path:
        return save_policy(model, self.cfg, self.market, self.forecasts, out)

    def load(self, directory: Path) -> nn.Module:
        return load_policy(directory)[0]

    def probe(self, model: nn.Module) -> torch.Tensor:
        """The hedges on the replayed test windows."""
        return rollout(self.market.problem, self.market.replay("test"), model)[1]


def _train(
    market: CodeMarket,
    cfg: dict[str, Any],
    reporter: TrackingReporter,
    checkpoints: Path,
    world_size: int,
    warm: WarmStart | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    problem, risk, seed = market.problem, parse_criterion(cfg["criterion"]), cfg["seed"]

    def sample(n_paths: int, generator: torch.Generator) -> Episodes:
        """Training episodes: states of the training split, anywhere in the code's life."""
        return market.sample(n_paths, generator, any_expiry=True)

    if cfg["algorithm"] == "ppo":
        if world_size > 1:
            raise ValueError("algorithm 'ppo' runs in a single process; set devices=1")
        policy, history = train_ppo(
            problem,
            risk,
            iterations=cfg["epochs"] * cfg["steps_per_epoch"],
            paths_per_iteration=cfg["paths_per_step"],
            seed=seed,
            width=cfg["width"],
            n_layers=cfg["n_layers"],
            sampler=sample,
            scale_inputs=True,
        )
        for i, loss in enumerate(history.loss, start=1):
            reporter.epoch(i, {"epoch": i, "train_loss": loss})
        return policy, {"history": [], "epochs": history.epochs, "seconds": history.seconds}
    torch.manual_seed(seed)
    # Start from the Black-Scholes delta hedge, inputs at unit scale (see InputScale), or from
    # the predecessor's weights (warm_start).
    policy = make_policy(
        cfg["head"],
        problem,
        cfg["width"],
        cfg["n_layers"],
        start_at_delta=True,
        gamma_gated=cfg["head"] == "mlp",
    )
    generator = torch.Generator().manual_seed(seed + _VAL_SEED)
    scaling = sample(cfg["val_paths"], generator)  # drawn either way: the same validation set
    if warm is None:
        policy.inputs.fit(market_features(problem, scaling))
    else:  # the predecessor's network, its input scaling included: the function it learned
        policy.load_state_dict(warm.state)
    # per_state: episodes in groups sharing a start state, scored state by state
    # (PerStateObjective); pooled: the criterion of the whole batch (groups of one).
    per_state = cfg["objective"] == "per_state"
    group = cfg["paths_per_state"] if per_state else 1
    validation = market.sample(cfg["val_paths"], generator, "val", any_expiry=True, group=group)
    task = HedgingTask(
        problem,
        lambda n_paths, gen: market.sample(n_paths, gen, any_expiry=True, group=group),
        risk,
        validation,
        cfg["steps_per_epoch"],
        cfg["paths_per_step"],
        seed,
        objective=PerStateObjective(problem, risk, group) if per_state else None,
    )
    train = TrainConfig(
        epochs=cfg["epochs"],
        lr=cfg["learning_rate"],
        patience=cfg["patience"],
        seed=seed,
        schedule="plateau",
        grad_clip=1.0,
        device="cpu",  # the simulator builds its tensors on the CPU
        validate_initial=True,  # the untrained policy is the BS hedge: keep it unless beaten
    )
    result = fit(policy, task, train, checkpoints, reporter)
    return result.model.eval(), {
        "history": result.history,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "start_epoch": result.start_epoch,
        "stopped": result.stopped,
        "seconds": float(sum(row["seconds"] for row in result.history)),
        "checkpoint_dir": str(checkpoints),
    }


def _risk_tables(
    market: CodeMarket, cfg: dict[str, Any], policy: nn.Module
) -> tuple[dict[str, Evaluation], dict[str, Comparison], dict[str, float]]:
    """The risk tables of every test set; on each test set, the policy and every baseline
    against the strongest baseline with a 95 % interval over blocks of windows
    (:mod:`~hedge_pipeline.hedging.comparison`: a start state, or replayed windows that
    overlap, is one block); and the share of simulated twins of the replayed split on which
    the policy beats BS delta."""
    problem, risk = market.problem, parse_criterion(cfg["criterion"])
    hedgers = baselines(problem, risk) | {POLICY: policy}
    simulated = market.sample(
        cfg["eval_paths"], torch.Generator().manual_seed(cfg["seed"] + _TEST_SEED), "test"
    )
    twins = market.simulated_replays(
        REPLAY_TWINS, torch.Generator().manual_seed(cfg["seed"] + _TWIN_SEED), "test"
    )
    replayed = market.replay("test")
    tables = {
        "test_replay": evaluate(problem, replayed, hedgers, risk),
        "test_simulated": evaluate(problem, simulated, hedgers, risk),
        "val_replay": evaluate(problem, market.replay("val"), hedgers, risk),
    }
    on_twins = evaluate(problem, twins, {k: hedgers[k] for k in ("bs_delta", POLICY)}, risk)
    blocks = {
        "test_replay": time_blocks(replayed.tau[:, 0], replayed.tau[:, -1]),
        # A start bar's distance to expiry names it (the test windows are not moved).
        "test_simulated": simulated.tau[:, 0],
    }
    comparisons = {
        split: compare(tables[split].metrics, tables[split].pnl, clusters, POLICY, cfg["seed"])
        for split, clusters in blocks.items()
    }
    return tables, comparisons, wins_by_group(on_twins, REPLAY_TWINS, POLICY, "bs_delta")


#: The risk table's columns beside the comparison (the full table has every column).
EXTRA_COLUMNS = (("mean P&L", "mean_pl", ".3g"), ("cost", "total_cost", ".3g"),
                 ("trades", "trade_frequency", ".0%"))  # fmt: skip


def _markdown_table(evaluation: Evaluation) -> str:
    columns = list(next(iter(evaluation.metrics.values())))
    rows = ([name, *(f"{row[c]:.5g}" for c in columns)] for name, row in evaluation.metrics.items())
    return markdown_table(["hedger", *columns], rows, right_from=1)


def _report(session: TrainingSession, done: Registered, model: SpecialistModel) -> None:
    """The materialization: the registered version, the verdict against the strongest
    baseline (numbers the UI plots across materializations), and the tables."""
    name, cfg, market = model.registered_name, model.cfg, model.market
    trained, tables, twins = model.trained, model.tables, model.twins
    replay = model.comparisons["test_replay"]
    if trained.get("best_epoch") == 0:
        session.warning(
            f"{name}: no epoch beat the untrained policy (the Black-Scholes hedge) on the "
            "validation episodes; the registered policy is that hedge"
        )
    calibration = market.calibration.as_dict()
    session.report(
        metadata={  # the verdict first: the UI lists entries in this order
            **replay.headline_metadata(),
            **done.metadata(),
            "twins_beating_bs_delta": twins["share"],
            "twins": REPLAY_TWINS,
            "upstream_cnn_lstm_version": int(done.tags[f"upstream.{CNN_LSTM_MODEL}"]),
            "algorithm": cfg["algorithm"],
            "criterion": cfg["criterion"],
            "epochs_run": trained["epochs"],
            "best_epoch": trained.get("best_epoch", trained["epochs"]),
            "train_seconds": trained["seconds"],
            **{
                f"evaluation_{split}": {
                    "raw_value": result.table(tables[split].metrics, EXTRA_COLUMNS),
                    "type": "md",
                }
                for split, result in model.comparisons.items()
            },
            **{
                f"risk_table_{split}": {"raw_value": _markdown_table(tables[split]), "type": "md"}
                for split in ("test_replay", "test_simulated")
            },
            "calibration": {
                "raw_value": markdown_table(
                    ["parameter", "value"], [[k, f"{v:.4g}"] for k, v in calibration.items()]
                ),
                "type": "md",
            },
            "reloads_identically": True,  # train_and_register raised otherwise
            **{key: {"raw_value": md, "type": "md"} for key, md in model.markdown.items()},
        },
        data_version=done.data_version,
    )
