"""The specialists' per-state objective: every start state counts, in units of its own risk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hedge_pipeline.hedging.baselines import BlackScholesDelta, NoHedge
from hedge_pipeline.hedging.simulator import (
    DELTA,
    LOG_MONEYNESS,
    Episodes,
    HedgingProblem,
    as_episodes,
    book_greeks,
    rollout,
    simulate_paths,
)
from hedge_pipeline.quant.risk import ExpectedShortfall
from hedge_pipeline.stages.specialists.objective import PerStateObjective

GROUP = 256


@pytest.fixture(scope="module")
def problem() -> HedgingProblem:
    return HedgingProblem(cost=1e-3, n_steps=10)


def grouped_paths(problem: HedgingProblem, starts: list[float]) -> Episodes:
    """GROUP GBM paths from each start price, consecutive, the book sold at its BS price."""
    spot = simulate_paths(problem, len(starts) * GROUP, torch.Generator().manual_seed(0))
    scale = torch.tensor(starts, dtype=spot.dtype).repeat_interleave(GROUP) / problem.s0
    episodes = as_episodes(problem, spot * scale.unsqueeze(1))
    value = book_greeks(problem, episodes.spot[:, 0], problem.maturity)["price"]
    return episodes._replace(premium=value)


class Tilt(nn.Module):
    """BS delta plus ``weight`` units of the underlying wherever the book is deep in the money
    (log-moneyness above 0.35: only the paths started at 1.6 ever get there)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.0))

    def forward(self, obs: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        deep = (obs[..., LOG_MONEYNESS] > 0.35).to(obs.dtype)
        return obs[..., DELTA] + self.weight * deep


def test_bs_delta_scores_zero_and_no_hedge_scores_its_gain_state_by_state(problem):
    paths = grouped_paths(problem, [1.0, 1.1])
    es = ExpectedShortfall(0.1)
    objective = PerStateObjective(problem, es, GROUP)
    assert float(objective(rollout(problem, paths, BlackScholesDelta())[0], paths)) == 0.0
    bs = rollout(problem, paths, BlackScholesDelta())[0].reshape(2, GROUP)
    naked = rollout(problem, paths, NoHedge())[0]
    expected = ((es.cash(naked.reshape(2, GROUP)) - es.cash(bs)) / bs.std(dim=-1)).mean()
    assert float(objective(naked, paths)) == pytest.approx(float(expected), rel=1e-6)
    assert float(objective(naked, paths)) > 0  # naked is worse than BS delta from both states


def test_a_state_outside_the_pooled_tail_still_sends_gradient(problem):
    """The reason for the objective: pooled ES sees only the riskiest states' windows."""
    # At the money (risky) and deep in the money (the call is almost the underlying: the
    # delta-hedged book is nearly riskless, so its windows never make the pooled tail).
    paths = grouped_paths(problem, [1.0, 1.6])
    policy = Tilt()
    pl = rollout(problem, paths, policy)[0]
    (pooled,) = torch.autograd.grad(ExpectedShortfall(0.1).loss(pl), policy.weight)
    assert float(pooled) == 0.0
    policy = Tilt()
    pl = rollout(problem, paths, policy)[0]
    objective = PerStateObjective(problem, ExpectedShortfall(0.1), GROUP)
    value = objective(pl, paths)
    (per_state,) = torch.autograd.grad(value, policy.weight)
    # The deep state's delta hedge is riskless (its spread is 0): floored, not divided by 0.
    assert torch.isfinite(value) and abs(float(per_state)) > 0.0


def test_bad_groups_are_refused(problem):
    with pytest.raises(ValueError, match="at least 2 episodes"):
        PerStateObjective(problem, ExpectedShortfall(0.1), 1)
    objective = PerStateObjective(problem, ExpectedShortfall(0.1), GROUP)
    paths = grouped_paths(problem, [1.0])[:100]
    with pytest.raises(ValueError, match="multiple of group=256"):
        objective(torch.zeros(100), paths)
