"""The hedging simulator: path statistics, the E1 analytic anchors, the P&L formula, autograd.

Tolerances are about four Monte Carlo standard errors of the quoted statistic.
"""

from __future__ import annotations

import math

import pytest
import torch

from hedge_pipeline.hedging.baselines import (
    BlackScholesDelta,
    BlackScholesDeltaGamma,
    NoHedge,
)
from hedge_pipeline.hedging.deep_hedging import NoTransactionBandPolicy, make_policy
from hedge_pipeline.hedging.simulator import (
    OBSERVATIONS,
    VOLATILITY,
    Book,
    HedgingProblem,
    Instrument,
    as_episodes,
    book_price,
    observations,
    pnl,
    rollout,
    simulate_episodes,
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


def test_an_option_hedged_with_itself_is_replicated_exactly():
    """Delta-gamma with the book's own option as the hedge: hold one, no underlying, wherever
    the option still has gamma; on those paths the P&L is minus what the option cost at t = 0
    (no trading cost on the option)."""
    problem = HedgingProblem(instrument=Instrument(strike=1.0, is_call=True))
    paths = simulate_paths(problem, 1000, torch.Generator().manual_seed(5), dtype=torch.float64)
    episodes = as_episodes(problem, paths)._replace(instrument_cost=torch.zeros_like(paths))
    textbook = BlackScholesDeltaGamma(problem, max_options=math.inf, min_gamma=1e-300)
    pl, hedges = rollout(problem, episodes, textbook)
    assert hedges.shape == (1000, problem.n_steps, 2)
    replicated = (hedges[..., 1] == 1.0).all(dim=1)
    assert int(replicated.sum()) > 990  # float64: φ(d1) underflows only past |d1| ≈ 38
    torch.testing.assert_close(hedges[replicated, :, 0], torch.zeros_like(hedges[replicated, :, 0]))
    expected = torch.full_like(pl[replicated], -book_price(problem))
    torch.testing.assert_close(pl[replicated], expected, atol=1e-12, rtol=0)


def _hedging_errors(n_steps: int) -> tuple[float, float]:
    """Std of the P&L of delta and of delta-gamma hedging, a short 1.05 call, the 1.0 call as
    the hedge option, no costs."""
    problem = HedgingProblem(
        book=Book(strikes=(1.05,)), instrument=Instrument(strike=1.0), n_steps=n_steps
    )
    paths = simulate_paths(problem, 20_000, torch.Generator().manual_seed(6), dtype=torch.float64)
    free = as_episodes(problem, paths)._replace(instrument_cost=torch.zeros_like(paths))
    delta_pl, delta_hedges = rollout(problem, free, BlackScholesDelta())
    assert torch.all(delta_hedges[..., 1] == 0)  # an underlying-only hedger holds no option
    textbook = BlackScholesDeltaGamma(problem, max_options=100.0, min_gamma=1e-300)
    gamma_pl, _ = rollout(problem, free, textbook)
    return float(delta_pl.std()), float(gamma_pl.std())


def test_delta_gamma_hedging_error_shrinks_faster_than_delta_hedging_error():
    """Delta hedging's error falls like N^(-1/2) (4x the steps: half the std); neutralizing
    gamma as well removes the leading term, so its error falls faster."""
    delta_15, gamma_15 = _hedging_errors(15)
    delta_60, gamma_60 = _hedging_errors(60)
    assert delta_15 / delta_60 == pytest.approx(2.0, rel=0.05)
    assert gamma_15 < delta_15 and gamma_60 < delta_60
    assert gamma_15 / gamma_60 > 1.2 * (delta_15 / delta_60)


def test_option_trades_pay_the_episodes_half_spread():
    problem = HedgingProblem(instrument=Instrument(strike=1.0))
    paths = simulate_paths(problem, 500, torch.Generator().manual_seed(7), dtype=torch.float64)
    free = as_episodes(problem, paths)._replace(instrument_cost=torch.zeros_like(paths))
    free_pl, hedges = rollout(problem, free, BlackScholesDeltaGamma(problem))
    spread = 0.01
    costly = free._replace(instrument_cost=torch.full_like(paths, spread))
    trades = torch.diff(hedges[..., 1], dim=1, prepend=torch.zeros_like(hedges[:, :1, 1]))
    expected = free_pl - spread * trades.abs().sum(dim=1)
    torch.testing.assert_close(pnl(problem, costly, hedges), expected)


def test_heads_that_cannot_trade_an_option_are_refused():
    problem = HedgingProblem(instrument=Instrument(strike=1.0))
    assert make_policy("mlp", problem).n_instruments == 2
    with pytest.raises(ValueError, match="hedges with the underlying alone; with a hedge option"):
        make_policy("ntb", problem)


# The Heston example of pfhedge's README: its HestonStock's defaults, v0 = θ.
PFHEDGE_HESTON = HestonParams(v0=0.04, theta=0.04, kappa=1.0, xi=0.2, rho=-0.7)


def test_episodes_of_a_market_without_observed_vol_are_its_price_paths():
    """No context: exactly the E1 episodes of simulate_paths' prices, GBM and Heston (the
    misspecified hedger at the reference vol), so E1's figures cannot move."""
    for problem in (E1, HedgingProblem(heston=PFHEDGE_HESTON)):
        episodes = simulate_episodes(problem, 64, torch.Generator().manual_seed(4))
        paths = simulate_paths(problem, 64, torch.Generator().manual_seed(4))
        expected = as_episodes(problem, paths)
        for got, want in zip(episodes, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_observed_heston_vol_is_the_variance_path_and_the_delta_is_taken_at_it():
    problem = HedgingProblem(heston=PFHEDGE_HESTON, context=(VOLATILITY,), n_steps=20,
                             maturity=20 / 250)  # fmt: skip
    n = 50_000
    episodes = simulate_episodes(problem, n, torch.Generator().manual_seed(8), torch.float64)
    # The same draws: the prices are simulate_paths'.
    paths = simulate_paths(problem, n, torch.Generator().manual_seed(8), torch.float64)
    torch.testing.assert_close(episodes.spot, paths, rtol=0, atol=0)
    vol = episodes.vol[..., 0]
    assert problem.observations[-2:] == (VOLATILITY, "prev_hedge")
    torch.testing.assert_close(episodes.context[..., 0], vol[:, :-1])
    assert torch.all(vol[:, 0] == PFHEDGE_HESTON.v0**0.5)
    # E[v_T] = θ + (v0 − θ)·e^{−κT} = θ here; Var v_T ≈ ξ²θT at this horizon (~4 SE).
    variance = vol[:, -1].square()
    se = math.sqrt(PFHEDGE_HESTON.xi**2 * PFHEDGE_HESTON.theta * problem.maturity / n)
    assert float(variance.mean()) == pytest.approx(PFHEDGE_HESTON.theta, abs=4 * se)
    # Leverage: the vol rises where the price fell.
    moves = torch.stack([torch.log(paths[:, -1]), vol[:, -1]])
    assert float(torch.corrcoef(moves)[0, 1]) < -0.5
    # The baselines' delta is Black–Scholes at each path's current vol, not at sigma.
    delta = rollout(problem, episodes, BlackScholesDelta())[1]
    tau = problem.maturity - torch.arange(20, dtype=torch.float64) * problem.dt
    expected = bs_greeks(paths[:, :-1], 1.0, tau, vol[:, :-1], is_call=True)["delta"]
    torch.testing.assert_close(delta, expected)
    at_sigma = bs_greeks(paths[:, :-1], 1.0, tau, problem.sigma, is_call=True)["delta"]
    assert float((delta - at_sigma).abs().max()) > 0.01


def test_observed_gbm_vol_is_sigma():
    problem = HedgingProblem(context=(VOLATILITY,))
    episodes = simulate_episodes(problem, 16, torch.Generator().manual_seed(0))
    assert torch.allclose(episodes.context, torch.tensor(0.2))
    plain = as_episodes(E1, simulate_paths(E1, 16, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(
        rollout(problem, episodes, BlackScholesDelta())[0],
        rollout(E1, plain, BlackScholesDelta())[0],
    )


def test_a_simulated_market_refuses_context_it_cannot_supply():
    problem = HedgingProblem(heston=PFHEDGE_HESTON, context=(VOLATILITY, "rv_forecast"))
    with pytest.raises(ValueError, match="'rv_forecast'"):
        simulate_episodes(problem, 4)
    # A price tensor would feed zeros for the vol: refused, as is a hedge option at sigma.
    observing = HedgingProblem(heston=PFHEDGE_HESTON, context=(VOLATILITY,))
    with pytest.raises(ValueError, match="carries no variance"):
        rollout(observing, simulate_paths(observing, 4), BlackScholesDelta())
    with_option = HedgingProblem(context=(VOLATILITY,), instrument=Instrument(1.05))
    with pytest.raises(ValueError, match="hedge option"):
        simulate_episodes(with_option, 4)
