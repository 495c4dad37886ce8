"""PPO: the update runs, improves its objective on E1, is deterministic, and GAE is right."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.baselines import BlackScholesDelta
from hedge_pipeline.hedging.deep_hedging import MLPPolicy
from hedge_pipeline.hedging.ppo import gae, risk_aversion, step_increments, train_ppo
from hedge_pipeline.hedging.simulator import (
    HedgingProblem,
    book_price,
    pnl,
    rollout,
    simulate_paths,
)
from hedge_pipeline.quant.risk import EntropicRisk, ExpectedShortfall, MeanVariance

E1 = HedgingProblem(cost=1e-3)


def test_gae_matches_a_hand_computed_three_step_episode():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    # γ = 1, λ = 0.5: δ = (1 + 1 − 0.5, 2 + 1.5 − 1, 3 + 0 − 1.5) = (1.5, 2.5, 1.5);
    # A_2 = 1.5, A_1 = 2.5 + 0.5·1.5 = 3.25, A_0 = 1.5 + 0.5·3.25 = 3.125.
    torch.testing.assert_close(gae(rewards, values, 1.0, 0.5), torch.tensor([[3.125, 3.25, 1.5]]))
    # γ = 0.9: δ = (1 + 0.9 − 0.5, 2 + 1.35 − 1, 1.5) = (1.4, 2.35, 1.5); γλ = 0.45.
    expected = torch.tensor([[1.4 + 0.45 * (2.35 + 0.45 * 1.5), 2.35 + 0.45 * 1.5, 1.5]])
    torch.testing.assert_close(gae(rewards, values, 0.9, 0.5), expected)
    # λ = 1 gives the Monte Carlo return minus the value.
    torch.testing.assert_close(gae(rewards, values, 1.0, 1.0), torch.tensor([[5.5, 4.0, 1.5]]))


def test_step_increments_sum_to_the_terminal_pnl_plus_the_book_value():
    problem = HedgingProblem(cost=1e-3, slippage=1e-3, fixed_fee=1e-4)
    paths = simulate_paths(problem, 512, torch.Generator().manual_seed(0), dtype=torch.float64)
    hedges = torch.rand((512, problem.n_steps), generator=torch.Generator().manual_seed(1))
    hedges = hedges.double()
    total = step_increments(problem, paths, hedges).sum(dim=1)
    torch.testing.assert_close(total - book_price(problem), pnl(problem, paths, hedges))


def test_risk_aversion_matches_each_criterion_to_second_order():
    assert risk_aversion(EntropicRisk(2.0), 0.01) == 1.0
    assert risk_aversion(MeanVariance(0.3), 0.01) == 0.3
    # φ(Φ⁻¹(0.1)) = 0.175498; λ = 0.175498 / (2 · 0.1 · σ_ref).
    assert risk_aversion(ExpectedShortfall(0.1), 0.5) == pytest.approx(1.75498, rel=1e-5)


def test_update_runs_and_the_policy_drives_rollout():
    threads = torch.get_num_threads()
    policy, history = train_ppo(E1, "es:0.1", iterations=2, paths_per_iteration=256, seed=0)
    assert isinstance(policy, MLPPolicy)
    assert history.epochs == 2 and history.env_steps == 2 * 256 * E1.n_steps
    assert history.steps_per_second > 0 and history.rollout_steps_per_second > 0
    assert history.rollout_seconds <= history.seconds
    assert torch.get_num_threads() == threads
    paths = simulate_paths(E1, 64, torch.Generator().manual_seed(3))
    with torch.no_grad():
        pl, hedges = rollout(E1, paths, policy)
    assert pl.shape == (64,) and hedges.shape == (64, E1.n_steps)
    assert torch.isfinite(pl).all()


def test_training_is_deterministic_given_the_seed():
    kwargs = {"iterations": 2, "paths_per_iteration": 256, "num_threads": 1}
    first, h1 = train_ppo(E1, "entropic:1", seed=5, **kwargs)
    second, h2 = train_ppo(E1, "entropic:1", seed=5, **kwargs)
    _, h3 = train_ppo(E1, "entropic:1", seed=6, **kwargs)
    assert h1.loss == h2.loss and h1.loss != h3.loss
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_short_run_improves_the_mean_variance_objective_on_e1():
    """The untrained policy is BS delta, which over-trades at c = 1e-3: PPO must trade less.

    Judged on fixed evaluation paths, with the objective PPO optimizes (entropic a = 1 ↔
    −E[PL] + 0.5·Var(PL)), against a paired-difference Monte Carlo error: the same paths for
    both policies, so the improvement must exceed four standard errors of the difference.
    """
    policy, history = train_ppo(
        E1, "entropic:1", iterations=16, paths_per_iteration=2048, seed=0, num_threads=1, lr=1e-3
    )
    paths = simulate_paths(E1, 50_000, torch.Generator().manual_seed(11))
    objective = MeanVariance(0.5)
    with torch.no_grad():
        trained = rollout(E1, paths, policy)[0].double()
        untrained = rollout(E1, paths, BlackScholesDelta())[0].double()
    improvement = float(objective.cash(untrained) - objective.cash(trained))
    standard_error = float((trained - untrained).std()) / len(paths) ** 0.5
    assert improvement > 4 * standard_error
    assert history.loss[-1] < history.loss[0]
