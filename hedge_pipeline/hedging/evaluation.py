"""Scoring hedgers side by side on one set of episodes: the risk table of every report.

Every hedger of a comparison runs on the same episodes (docs/design.md §7: baselines always on the
same paths), so differences between rows are differences between hedgers, not Monte Carlo
noise between path sets. :func:`pnl_metrics` is the one definition of the columns that
``hedge bench hedging``, the specialists and later stages report.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hedge_pipeline.hedging.baselines import (
    BlackScholesDelta,
    BlackScholesDeltaGamma,
    NoHedge,
    WhalleyWilmott,
)
from hedge_pipeline.hedging.simulator import (
    DELTA,
    Episodes,
    HedgingProblem,
    Policy,
    episode_costs,
    market_features,
    rollout,
    trades,
)
from hedge_pipeline.quant.risk import EntropicRisk, ExpectedShortfall, RiskMeasure

__all__ = [
    "Evaluation",
    "baselines",
    "evaluate",
    "pnl_metrics",
    "wins_by_group",
]

TRADE_TOLERANCE = 1e-6  # a position change below this is not a trade


def baselines(problem: HedgingProblem, risk: RiskMeasure) -> dict[str, Policy]:
    """No hedge, Black–Scholes delta and the Whalley–Wilmott band (risk aversion: the entropic
    parameter when the criterion is entropic, else 1); with a hedge option, also delta-gamma."""
    risk_aversion = risk.a if isinstance(risk, EntropicRisk) else 1.0
    hedgers: dict[str, Policy] = {
        "no_hedge": NoHedge(),
        "bs_delta": BlackScholesDelta(),
        "whalley_wilmott": WhalleyWilmott(problem, risk_aversion),
    }
    if problem.instrument is not None:
        hedgers["bs_delta_gamma"] = BlackScholesDeltaGamma(problem)
    return hedgers


def pnl_metrics(pl: Tensor, risk: RiskMeasure) -> dict[str, float]:
    """``price`` (the criterion's cash, lower is better), ``mean_pl``, ``std_pl``, ``es10``,
    computed in float64."""
    pl = pl.double()
    return {
        "price": float(risk.cash(pl)),
        "mean_pl": float(pl.mean()),
        "std_pl": float(pl.std()) if pl.numel() > 1 else 0.0,
        "es10": float(ExpectedShortfall(0.1).cash(pl)),
    }


@dataclass(frozen=True)
class Evaluation:
    """Per hedger: metrics, P&L per episode and positions per episode and step."""

    metrics: dict[str, dict[str, float]]
    pnl: dict[str, Tensor]
    hedges: dict[str, Tensor]
    delta: Tensor  # (n_paths, n_steps): the Black–Scholes delta the baselines read
    # hedges are (n_paths, n_steps), or (n_paths, n_steps, 2) with a hedge option


def evaluate(
    problem: HedgingProblem,
    episodes: Tensor | Episodes,
    hedgers: dict[str, Policy],
    risk: RiskMeasure,
) -> Evaluation:
    """Roll every hedger on ``episodes``; besides :func:`pnl_metrics`, each row has
    ``total_cost`` (mean transaction cost per episode), ``trade_frequency`` (share of
    decisions that change a position) and ``mean_abs_gap_to_delta`` (mean |underlying position
    − BS delta|, how far a hedger strays from the textbook hedge)."""
    with torch.no_grad():
        delta = market_features(problem, episodes)[..., DELTA]
        metrics, pnls, positions = {}, {}, {}
        for name, hedger in hedgers.items():
            pl, hedges = rollout(problem, episodes, hedger)
            costs = episode_costs(problem, episodes, hedges)
            traded = trades(hedges).abs() > TRADE_TOLERANCE
            underlying = hedges if hedges.ndim == 2 else hedges[..., 0]
            metrics[name] = pnl_metrics(pl, risk) | {
                "total_cost": float(costs.double().mean()),
                "trade_frequency": float(
                    (traded if traded.ndim == 2 else traded.any(-1)).double().mean()
                ),
                "mean_abs_gap_to_delta": float((underlying - delta).abs().double().mean()),
            }
            pnls[name], positions[name] = pl, hedges
    return Evaluation(metrics, pnls, positions, delta)


def wins_by_group(
    evaluation: Evaluation, n_groups: int, hedger: str, baseline: str
) -> dict[str, float]:
    """``hedger`` against ``baseline`` on each of ``n_groups`` consecutive equal groups of
    the episodes (e.g. the simulated twins of a replayed split: ``CodeMarket.simulated_replays``):
    ``share`` of groups where its ES 10 % is lower, and the median of the groups' ES 10 %
    difference (``median_difference``; < 0: better) and of that difference over |baseline's|
    (``median_relative_difference``)."""
    es = ExpectedShortfall(0.1)
    ours = es.cash(evaluation.pnl[hedger].double().reshape(n_groups, -1))
    theirs = es.cash(evaluation.pnl[baseline].double().reshape(n_groups, -1))
    difference = ours - theirs
    return {
        "share": float((difference < 0).double().mean()),
        "median_difference": float(difference.median()),
        "median_relative_difference": float((difference / theirs.abs().clamp(min=1e-12)).median()),
    }
