"""The hedging simulator: path statistics, the E1 analytic anchors, the P&L formula, autograd.

Tolerances are about four Monte Carlo standard errors of the quoted statistic.
"""

from __future__ import annotations

import math

import pytest
import torch

from hedge_pipeline.ml.hedging.baselines import BlackScholesDelta, NoHedge
from hedge_pipeline.ml.hedging.deep_hedging import NoTransactionBandPolicy
from hedge_pipeline.ml.hedging.simulator import (
    OBSERVATIONS,
    Book,
    HedgingProblem,
    book_price,
    observations,
    pnl,
    rollout,
    simulate_paths,
)
from hedge_pipeline.quant.market_sim import HestonParams
from hedge_pipeline.quant.risk import EntropicRisk
from hedge_pipeline.quant.torch_pricing import bs_greeks

N_PATHS = 100_000
E1 = HedgingProblem()


@pytest.fixture(scope="module")
def e1_paths() -> torch.Tensor:
    return simulate_paths(E1, N_PATHS, torch.Generator().manual_seed(11), dtype=torch.float64)


@pytest.fixture(scope="module")
def delta_hedges(e1_paths) -> torch.Tensor:
    return rollout(E1, e1_paths, BlackScholesDelta())[1]


def test_gbm_moments(e1_paths):
    log_t = torch.log(e1_paths[:, -1])
    var = 0.2**2 * E1.maturity
    assert e1_paths.shape == (N_PATHS, 31)
    assert torch.all(e1_paths[:, 0] == 1.0)
    assert float(e1_paths[:, -1].mean()) == pytest.approx(1.0, abs=4 * math.sqrt(var / N_PATHS))
    assert float(log_t.mean()) == pytest.approx(-0.5 * var, abs=4 * math.sqrt(var / N_PATHS))
    assert float(log_t.var()) == pytest.approx(var, rel=0.02)


def test_seeded_paths_are_reproducible():
    a = simulate_paths(E1, 8, torch.Generator().manual_seed(3))
    b = simulate_paths(E1, 8, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_heston_paths_are_a_martingale_with_leverage():
    problem = HedgingProblem(heston=HestonParams(v0=0.04, theta=0.04, kappa=2.0, xi=0.6))
    paths = simulate_paths(problem, 20_000, torch.Generator().manual_seed(5), torch.float64)
    assert paths.shape == (20_000, 31)
    assert float(paths[:, -1].mean()) == pytest.approx(1.0, abs=2e-3)
    # rho < 0: the return distribution is skewed to the left.
    ret = torch.log(paths[:, -1])
    skew = float(((ret - ret.mean()) ** 3).mean() / ret.std() ** 3)
    assert skew < -0.05


def test_bs_delta_hedging_error_at_zero_cost(e1_paths, delta_hedges):
    pl = pnl(E1, e1_paths, delta_hedges)
    assert float(pl.std()) == pytest.approx(0.004318, rel=0.02)  # MC anchor, N = 30
    assert float(-pl.mean()) == pytest.approx(book_price(E1), abs=4 * 0.0043 / math.sqrt(N_PATHS))


def test_bs_delta_cost_and_entropic_price(e1_paths, delta_hedges):
    costly = HedgingProblem(cost=1e-3)
    cost = pnl(E1, e1_paths, delta_hedges) - pnl(costly, e1_paths, delta_hedges)
    assert float(cost.mean()) == pytest.approx(0.002227, abs=1e-5)
    price = EntropicRisk(1.0).cash(pnl(costly, e1_paths, delta_hedges))
    assert float(price) == pytest.approx(0.029864, abs=6e-5)


def test_no_hedge_entropic_price(e1_paths):
    pl = rollout(E1, e1_paths, NoHedge())[0]
    assert float(EntropicRisk(1.0).cash(pl)) == pytest.approx(0.028591, abs=5e-4)


def test_pnl_by_hand():
    problem = HedgingProblem(n_steps=2, maturity=2 / 250, cost=0.01)
    paths = torch.tensor([[1.0, 1.1, 0.9], [1.0, 1.2, 1.3]], dtype=torch.float64)
    hedges = torch.tensor([[0.5, 0.8], [0.5, 0.8]], dtype=torch.float64)
    # Path 1: payoff 0, gains 0.5·0.1 + 0.8·(−0.2), costs 0.01·(0.5·1.0 + 0.3·1.1).
    # Path 2: payoff 0.3, gains 0.5·0.2 + 0.8·0.1, costs 0.01·(0.5·1.0 + 0.3·1.2).
    expected = torch.tensor([-0.11 - 0.0083, -0.3 + 0.18 - 0.0086], dtype=torch.float64)
    torch.testing.assert_close(pnl(problem, paths, hedges), expected)
    impact = HedgingProblem(n_steps=2, maturity=2 / 250, slippage=0.1, fixed_fee=0.002)
    extra = 0.1 * (0.25 * 1.0 + 0.09 * 1.1) + 2 * 0.002
    assert float(pnl(impact, paths, hedges)[0]) == pytest.approx(-0.11 - extra)


def test_put_book_payoff():
    problem = HedgingProblem(
        n_steps=1, book=Book(strikes=(1.0, 1.2), is_call=(False, True), weights=(2.0, -1.0))
    )
    paths = torch.tensor([[1.0, 0.9], [1.0, 1.3]], dtype=torch.float64)
    pl = pnl(problem, paths, torch.zeros(2, 1, dtype=torch.float64))
    torch.testing.assert_close(pl, torch.tensor([-0.2, 0.1], dtype=torch.float64))


def test_observations(e1_paths):
    prev = torch.full((N_PATHS,), 0.3, dtype=torch.float64)
    obs = observations(E1, e1_paths, 10, prev)
    assert obs.shape == (N_PATHS, len(OBSERVATIONS))
    tau = E1.maturity - 10 * E1.dt
    g = bs_greeks(e1_paths[:, 10], 1.0, tau, 0.2)
    torch.testing.assert_close(obs[:, 0], torch.log(e1_paths[:, 10]))
    assert torch.allclose(obs[:, 1], torch.tensor(tau, dtype=torch.float64))
    torch.testing.assert_close(obs[:, 2], g["delta"])
    torch.testing.assert_close(obs[:, 3], g["gamma"] * e1_paths[:, 10] * 0.2 * math.sqrt(tau))
    torch.testing.assert_close(obs[:, 4], prev)
    with pytest.raises(ValueError, match="decision time"):
        observations(E1, e1_paths, 30, prev)


def test_rollout_is_differentiable():
    torch.manual_seed(0)
    policy = NoTransactionBandPolicy()
    problem = HedgingProblem(cost=1e-3)
    paths = simulate_paths(problem, 512, torch.Generator().manual_seed(0))
    pl, hedges = rollout(problem, paths, policy)
    assert hedges.shape == (512, 30)
    EntropicRisk(1.0).loss(pl).backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0.0


def test_rejects_bad_shapes(e1_paths):
    with pytest.raises(ValueError, match="paths must be"):
        pnl(E1, e1_paths[:, :5], torch.zeros(N_PATHS, 30))
    with pytest.raises(ValueError, match="hedges must be"):
        pnl(E1, e1_paths, torch.zeros(N_PATHS, 29))
