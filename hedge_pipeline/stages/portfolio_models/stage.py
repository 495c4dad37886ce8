"""What the three portfolio stages share: the portfolio, its models' folders, their reloading.

Every stage opens the same way (:func:`open_stage`): config checked, the portfolio loaded and
described, the fixed validation windows and the objective built on them.

Extras (from the ``meta_controller``, ``joint_model`` and ``hedge_ensemble`` assets):
``features`` (the book rows of every selected code's ``greeks_features``), ``selection``
(``portfolio_selection``), ``specialists`` (``{weekly_code: hedge-specialist version}``, the
versions the latest ``specialist_agents`` materializations registered), ``config`` and
``identity``.

Each code's market is rebuilt exactly as its specialist saw it: the same episodes, costs and
CNN-LSTM forecasts (stored in the specialist's registered folder), so no CNN-LSTM runs here.
The portfolio is the codes of one underlying (``config["underlying"]``, default the one with
the most selected codes; codes of other underlyings are named in the log and left out).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
import torch
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict
from torch import nn

from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.threads import torch_threads
from hedge_pipeline.quant.risk import parse_criterion
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import ArtifactSpec, load_weights
from hedge_pipeline.stages.portfolio_models.config import MetaControllerInputs
from hedge_pipeline.stages.portfolio_models.controller import (
    MetaController,
    PortfolioProblem,
    fit_inputs,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.evaluation import (
    baseline_positions,
    fit_portfolio_mv,
    score,
)
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes, PortfolioMarket
from hedge_pipeline.stages.portfolio_models.objective import PortfolioObjective, value_at_risk
from hedge_pipeline.stages.specialists.artifact import (
    FORECASTS_FILE,
    Costs,
    code_market,
    load_policy,
    model_name,
)

META_MODEL = "hedge-meta-controller"
JOINT_MODEL = "hedge-joint"
ENSEMBLE_MODEL = "hedge-ensemble"
# Seeds of the fixed evaluation draws, far from any training seed.
VAL_SEED, TEST_SEED, SCALE_SEED = 7_100_003, 9_100_011, 5_100_007
# Offset of a joint member's bootstrap of the training windows from its seed.
BOOTSTRAP_SEED = 3_100_019


@dataclass
class Portfolio:
    """The market, the problem and the frozen specialists (in ``market.codes`` order)."""

    market: PortfolioMarket
    problem: PortfolioProblem
    specialists: list[nn.Module]
    versions: dict[str, int]  # weekly code → hedge-specialist version
    excluded: list[str]

    @property
    def upstream(self) -> dict[str, int]:
        return {model_name(code): v for code, v in self.versions.items()}


def load_portfolio(
    client: MlflowClient, inputs: MetaControllerInputs, cfg: dict[str, Any]
) -> Portfolio:
    """The portfolio of the inputs' specialists (module docstring)."""
    features = pl.read_parquet(inputs.features)
    selection = pl.read_parquet(inputs.selection)
    wanted = dict(inputs.specialists)
    if not wanted:
        raise ValueError("no specialist to combine: materialize specialist_agents first")
    underlyings = (
        features.filter(pl.col("weekly_code").is_in(list(wanted)))
        .group_by("weekly_code")
        .agg(pl.col("underlying").first())
    )
    by_code = dict(zip(underlyings["weekly_code"], underlyings["underlying"], strict=True))
    missing = sorted(set(wanted) - set(by_code))
    if missing:
        raise ValueError(f"no greeks_features rows for the selected codes {missing}")
    counts: dict[str, int] = {}
    for u in by_code.values():
        counts[u] = counts.get(u, 0) + 1
    underlying = cfg.get("underlying") or max(sorted(counts), key=lambda u: counts[u])
    if underlying not in counts:
        raise ValueError(f"no selected code on underlying {underlying!r}; have {sorted(counts)}")
    codes = sorted(c for c, u in by_code.items() if u == underlying)
    markets, specialists = [], []
    for code in codes:
        loaded = registry.load_version(client, model_name(code), wanted[code])
        policy, spec = load_policy(loaded.directory)
        if not (loaded.directory / FORECASTS_FILE).exists():
            raise ValueError(
                f"{model_name(code)} v{loaded.version} was registered without its CNN-LSTM "
                "forecasts (an older release): re-materialize specialist_agents for "
                f"{code}"
            )
        forecasts = pl.read_parquet(loaded.directory / FORECASTS_FILE)
        rows = pl.col("weekly_code") == code
        market = code_market(
            features.filter(rows), selection.filter(rows), forecasts, spec.market_config()
        )
        markets.append(market)
        specialists.append(policy)
    market = PortfolioMarket(markets)
    order = [codes.index(c) for c in market.codes]
    problem = PortfolioProblem(
        codes=market.codes,
        problems=tuple(m.problem for m in market.markets),
        cost=cfg["cost"],
        slippage=cfg["slippage"],
        fixed_fee=cfg["fixed_fee"],
        max_position=cfg.get("max_position"),
    )
    # The minimum-variance delta's coefficients, on the replayed training windows only;
    # without three steps to fit on, the baseline is left out (describe() says so).
    with contextlib.suppress(ValueError):
        problem = replace(problem, mv_delta=fit_portfolio_mv(problem, market.replay("train")))
    return Portfolio(
        market=market,
        problem=problem,
        specialists=[specialists[i] for i in order],
        versions={c: wanted[c] for c in market.codes},
        excluded=sorted(set(wanted) - set(codes)),
    )


@dataclass
class StageInputs:
    """What every portfolio stage starts from (:func:`open_stage`); ``cfg`` is a validated
    :class:`.config.PortfolioModelStageConfig` as a mapping."""

    extras: MetaControllerInputs  # the stage's own subclass (its upstream versions)
    cfg: dict[str, Any]
    identity: dict[str, Any]
    client: MlflowClient
    portfolio: Portfolio
    validation: PortfolioEpisodes
    objective: PortfolioObjective


@contextmanager
def open_stage(
    session: TrainingSession, inputs_type: type[MetaControllerInputs]
) -> Iterator[StageInputs]:
    """The stage's checked config, identity, registry client, portfolio (described in the
    log), fixed validation windows and objective, with the configured torch threads for the
    block. None of it draws from torch's global generator, so a stage seeding it afterwards
    (the meta-controller's initial weights) gets the same draws as before it."""
    extras = inputs_type.parse(session.extras)
    cfg = extras.config.as_dict()
    with torch_threads(cfg["num_threads"]):
        client = registry.client()
        portfolio = load_portfolio(client, extras, cfg)
        describe(session, portfolio)
        validation = validation_windows(portfolio, cfg)
        yield StageInputs(
            extras,
            cfg,
            extras.identity_dict(),
            client,
            portfolio,
            validation,
            objective(portfolio, cfg, validation),
        )


def describe(session: TrainingSession, portfolio: Portfolio) -> None:
    m = portfolio.market
    session.info(
        f"portfolio of {len(m.codes)} codes ({', '.join(m.codes)}); windows "
        + ", ".join(f"{s} {len(m._windows[s])}" for s in ("train", "val", "test"))
        + f"; specialists {portfolio.versions}"
    )
    mv = portfolio.problem.mv_delta
    session.info(
        "minimum-variance delta (a, b, c) on the training windows: "
        + (", ".join(f"{x:.4g}" for x in mv) if mv else "not fitted (too few steps)")
    )
    if portfolio.excluded:
        session.warning(
            f"left out codes of other underlyings: {', '.join(portfolio.excluded)} "
            "(set config underlying to hedge them instead)"
        )


def sampler(portfolio: Portfolio, vol_scale: tuple[float, float] = (1.0, 1.0)):
    """Training windows: the training split, moved anywhere before expiry (as the specialists')."""

    def sample(n_paths: int, generator: torch.Generator):
        return portfolio.market.sample(
            n_paths, generator, "train", any_expiry=True, vol_scale=vol_scale
        )

    return sample


def validation_windows(portfolio: Portfolio, cfg: dict[str, Any]):
    return portfolio.market.sample(
        cfg["val_paths"], torch.Generator().manual_seed(cfg["seed"] + VAL_SEED), "val"
    )


def objective(portfolio: Portfolio, cfg: dict[str, Any], validation) -> PortfolioObjective:
    """The configured objective; without a ``var_limit`` the limit is BS delta's VaR on the
    validation windows (the hedge must keep losses within what delta hedging risks)."""
    risk = parse_criterion(cfg["criterion"])
    limit = cfg.get("var_limit")
    if limit is None:
        held = baseline_positions(portfolio.problem, validation)
        bs = score(portfolio.problem, validation, held, risk, float("inf"))[1]["bs_delta"]
        limit = float(value_at_risk(bs, cfg["var_level"]))
    return PortfolioObjective(
        risk,
        cost_weight=cfg["cost_weight"],
        var_limit=float(limit),
        var_level=cfg["var_level"],
        risk_penalty=cfg["risk_penalty"],
        diversification_bonus=cfg["diversification_bonus"],
    )


def new_meta(portfolio: Portfolio, cfg: dict[str, Any]) -> MetaController:
    """A controller at its starting point, input scales fitted on training windows."""
    meta = MetaController(
        n_context=len(portfolio.problem.problems[0].context),
        width=cfg["width"],
        n_layers=cfg["n_layers"],
    )
    sample = portfolio.market.sample(
        cfg["val_paths"],
        torch.Generator().manual_seed(cfg["seed"] + SCALE_SEED),
        "train",
        any_expiry=True,
    )
    with torch.no_grad():
        prop = proposals(portfolio.problem, sample, portfolio.specialists)
        fit_inputs(meta, portfolio.problem, sample, prop)
    return meta


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetaControllerSizes(_Part):
    """:class:`MetaController`'s constructor arguments (its ``config``)."""

    n_context: int
    width: int
    n_layers: int
    initial_band: float
    initial_weight: float
    max_scale_change: float

    def build(self) -> MetaController:
        return MetaController(**self.model_dump())


class PortfolioModelSpec(ArtifactSpec):
    """What every portfolio model's registered folder states: the controller's sizes, the
    codes in the order the model expects them, the specialist versions it hedges with, and the
    costs, position cap and criterion it was trained under."""

    meta: MetaControllerSizes
    codes: list[str]
    specialists: dict[str, int]
    costs: Costs
    max_position: float | None = None
    criterion: str

    @classmethod
    def of(cls, portfolio: Portfolio, meta: MetaController, cfg: dict[str, Any], **extra: Any):
        """The spec of a model of ``portfolio`` around ``meta``, trained under ``cfg``."""
        return cls(
            meta=MetaControllerSizes(**meta.config),
            codes=list(portfolio.market.codes),
            specialists=portfolio.versions,
            costs=Costs(cost=cfg["cost"], slippage=cfg["slippage"], fixed_fee=cfg["fixed_fee"]),
            max_position=cfg.get("max_position"),
            criterion=cfg["criterion"],
            **extra,
        )


class MetaControllerSpec(PortfolioModelSpec):
    """``hedge-meta-controller``: also the VaR limit its objective held it to."""

    var_limit: float


class JointMemberInfo(_Part):
    member: int
    seed: int


class JointSpec(MetaControllerSpec):
    """``hedge-joint``: the meta-controller's spec it started from, and its member seed."""

    joint: JointMemberInfo


class EnsembleInfo(_Part):
    joint_versions: list[int]
    weights: list[float]
    validation_risk: list[float]
    turbulence_threshold: float
    turbulence_quantile: float
    # Whether the guard is on: kept only where it did not raise the validation windows' ES10
    # (``guard_validation_es10``: with and without it). Versions registered before the
    # choice always had it.
    guard: bool = True
    guard_validation_es10: dict[str, float] = {}


class EnsembleSpec(PortfolioModelSpec):
    """``hedge-ensemble``: its members' versions and weights, the turbulence guard, and the
    members' own spec (they all share it)."""

    ensemble: EnsembleInfo
    member_spec: JointSpec


def joint_skeleton(portfolio: Portfolio, spec: PortfolioModelSpec) -> JointModel:
    """A joint model shaped like ``spec``'s, on this portfolio's specialists (copies)."""
    if spec.codes != list(portfolio.market.codes):
        raise ValueError(
            f"the model covers codes {spec.codes}, this portfolio {list(portfolio.market.codes)}"
        )
    # Copies: each joint model trains its own specialists.
    specialists = [copy.deepcopy(p) for p in portfolio.specialists]
    return JointModel(spec.meta.build(), specialists)


def load_joint(portfolio: Portfolio, directory: Path) -> JointModel:
    """A registered joint model rebuilt around this portfolio's specialists."""
    model = joint_skeleton(portfolio, JointSpec.read(directory))
    model.load_state_dict(load_weights(directory))
    return model


def at_costs(problem: PortfolioProblem, scale: float) -> PortfolioProblem:
    """``problem`` with every cost times ``scale``: the underlying's cost, slippage and fee,
    and the hedge options' quoted half-spreads (a curriculum phase at half costs that still
    paid the options' full spreads would teach the specialists to trade the underlying
    instead of their option)."""
    return replace(
        problem,
        cost=problem.cost * scale,
        slippage=problem.slippage * scale,
        fixed_fee=problem.fixed_fee * scale,
        spread_scale=problem.spread_scale * scale,
    )
