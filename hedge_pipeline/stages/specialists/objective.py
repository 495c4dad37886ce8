"""The specialists' training objective: beat Black–Scholes delta from every start state.

A weekly code's test windows all start in the code's last days, one market state after another;
its training windows start anywhere in its life, at every moneyness. Pooled over such a batch,
expected shortfall is the mean of the batch's worst windows, and those all start near the money,
where gamma is largest: windows of a book far from the money are never in the tail, so they
send no gradient, and the policy there is whatever the network extrapolates. Measured on the
default profile's specialists (benchmarks/specialists.md): trained on pooled ES 10 %, the two
codes whose test days sit far from the money lost 4–6 % of ES to BS delta in simulation,
although they beat it on the validation states.

:class:`PerStateObjective` scores the policy where the user meets it, from one state at a time:
the episodes come in groups that share a start state
(:meth:`~hedge_pipeline.hedging.code_market.CodeMarket.sample` with ``group``), and the
loss is the mean over groups of

    (ρ(P&L of the policy | state) − ρ(P&L of BS delta | state)) / sd(P&L of BS delta | state),

the risk measure ρ's gain over the delta hedge from that state, in units of that state's
delta-hedged spread. Every state then counts, and counts alike: a gain of 1 % of the risk
near the money weighs as much as a loss of 1 % where the book is almost linear. The delta
hedge's own score is a constant of the batch, so subtracting it changes no gradient; it
makes the value read as a gain (< 0: better than BS delta) and comparable across batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hedge_pipeline.hedging.baselines import BlackScholesDelta
from hedge_pipeline.hedging.simulator import Episodes, HedgingProblem, rollout
from hedge_pipeline.quant.risk import RiskMeasure

__all__ = ["PerStateObjective"]

# A state's spread is floored at this fraction of the batch's mean: a group whose delta hedge
# is riskless (a book deep in the money, nearly linear) would otherwise weigh without bound.
SPREAD_FLOOR = 0.01


class PerStateObjective:
    """Mean over start states of the risk's gain over BS delta, in units of its spread (module
    docstring). ``group`` consecutive episodes share a start state.

    Shape:
        pl: (n_paths,) with n_paths a multiple of ``group``, episodes: those n_paths → ()
    """

    def __init__(self, problem: HedgingProblem, risk: RiskMeasure, group: int) -> None:
        if group < 2:
            raise ValueError(f"a start state needs at least 2 episodes to have a risk, got {group}")
        self.problem, self.risk, self.group = problem, risk, group
        self.baseline = BlackScholesDelta()

    def __repr__(self) -> str:
        return f"PerStateObjective({self.risk!r}, group={self.group})"

    def __call__(self, pl: Tensor, episodes: Episodes) -> Tensor:
        if pl.ndim != 1 or pl.numel() % self.group:
            raise ValueError(
                f"need a flat P&L whose length is a multiple of group={self.group}, "
                f"got shape {tuple(pl.shape)}"
            )
        with torch.no_grad():
            baseline = rollout(self.problem, episodes, self.baseline)[0].reshape(-1, self.group)
        spread = baseline.std(dim=-1)
        spread = spread.clamp(min=SPREAD_FLOOR * float(spread.mean()) + 1e-12)
        gain = self.risk.cash(pl.reshape(-1, self.group)) - self.risk.cash(baseline)
        return (gain / spread).mean()
