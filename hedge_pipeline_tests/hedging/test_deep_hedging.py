"""The deep hedger: training runs, respects its budget, and learns the zero-cost optimum."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.baselines import BlackScholesDelta
from hedge_pipeline.hedging.deep_hedging import (
    MLPPolicy,
    NoTransactionBandPolicy,
    make_policy,
    train_deep_hedger,
)
from hedge_pipeline.hedging.simulator import (
    DELTA,
    SCALED_GAMMA,
    VOLATILITY,
    HedgingProblem,
    market_features,
    rollout,
    simulate_episodes,
    simulate_paths,
)
from hedge_pipeline.quant.market_sim import HestonParams
from hedge_pipeline.quant.risk import EntropicRisk


def test_zero_cost_hedger_reproduces_the_black_scholes_price():
    problem = HedgingProblem()
    policy, history = train_deep_hedger(
        problem, "entropic:1", epochs=30, paths_per_epoch=1000, lr=2e-2, seed=1, num_threads=1
    )
    assert isinstance(policy, NoTransactionBandPolicy)
    assert history.epochs == 30
    paths = simulate_paths(problem, 20_000, torch.Generator().manual_seed(99))
    entropic = EntropicRisk(1.0)
    with torch.no_grad():
        learned = float(entropic.cash(rollout(problem, paths, policy)[0].double()))
        delta = float(entropic.cash(rollout(problem, paths, BlackScholesDelta())[0].double()))
    # Same paths: the Monte Carlo noise cancels; 2e-4 is ~5 % of the hedging error's std.
    assert learned == pytest.approx(delta, abs=2e-4)


def test_mlp_head_starts_at_black_scholes_delta():
    problem = HedgingProblem(cost=1e-3)
    paths = simulate_paths(problem, 256, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    hedges = rollout(problem, paths, MLPPolicy())[1]
    torch.testing.assert_close(hedges, rollout(problem, paths, BlackScholesDelta())[1])


def test_time_budget_stops_training_and_threads_are_restored():
    threads = torch.get_num_threads()
    policy, history = train_deep_hedger(
        HedgingProblem(cost=1e-3),
        "es:0.1",
        epochs=10_000,
        paths_per_epoch=256,
        head="mlp",
        time_budget_s=0.2,
        num_threads=1,
    )
    assert isinstance(policy, MLPPolicy)
    assert 1 <= history.epochs < 10_000
    assert history.seconds >= 0.2
    assert torch.get_num_threads() == threads


def test_rejects_unknown_head():
    with pytest.raises(ValueError, match="unknown head"):
        train_deep_hedger(HedgingProblem(), "entropic:1", epochs=1, head="lstm")


def test_a_gamma_gated_correction_vanishes_where_the_book_has_no_gamma():
    problem = HedgingProblem()
    policy = make_policy("mlp", problem, start_at_delta=False, gamma_gated=True)
    obs = torch.randn(64, problem.n_features + 1)
    obs[:, SCALED_GAMMA] = 0.0
    torch.testing.assert_close(policy(obs, obs[:, -1]), obs[:, DELTA], rtol=0.0, atol=0.0)
    obs[:, SCALED_GAMMA] = 1.0
    assert not torch.equal(policy(obs, obs[:, -1]), obs[:, DELTA])
    with pytest.raises(ValueError, match="gamma_gated needs 'mlp'"):
        make_policy("ntb", problem, gamma_gated=True)


def test_a_heston_hedger_trains_on_the_vol_it_observes():
    """The default sampler of a problem that observes the vol draws episodes with the vol
    column; the trained band moves with that column, so the vol reaches the network."""
    problem = HedgingProblem(
        heston=HestonParams(v0=0.04, theta=0.04, kappa=1.0, xi=0.2, rho=-0.7),
        cost=1e-3,
        context=(VOLATILITY,),
    )
    policy, history = train_deep_hedger(
        problem, "es:0.1", epochs=5, paths_per_epoch=512, lr=1e-2, num_threads=1,
        start_at_delta=True,
    )  # fmt: skip
    assert problem.n_features == 5 and history.epochs == 5
    episodes = simulate_episodes(problem, 256, torch.Generator().manual_seed(1))
    features = market_features(problem, episodes)[:, 10]
    calmer = features.clone()
    calmer[:, -1] = 0.5 * calmer[:, -1]
    with torch.no_grad():
        lower, upper = policy.band(features)
        calm_lower, calm_upper = policy.band(calmer)
    assert not torch.allclose(upper - lower, calm_upper - calm_lower)
