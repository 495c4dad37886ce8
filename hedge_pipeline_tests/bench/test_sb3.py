"""PPO vs Stable-Baselines3: SB3 sees our PPO's problem; every policy is priced on one path set."""

from __future__ import annotations

import functools
import json
import tempfile

import numpy as np
import pytest
import torch

from hedge_pipeline.bench import env as bench_env
from hedge_pipeline.bench import sb3
from hedge_pipeline.hedging.baselines import NoHedge
from hedge_pipeline.hedging.deep_hedging import MLPPolicy
from hedge_pipeline.hedging.envs import HedgingEnv
from hedge_pipeline.hedging.ppo import step_increments
from hedge_pipeline.hedging.simulator import (
    PREV_HEDGE,
    HedgingProblem,
    book_price,
    pnl,
    rollout,
    simulate_paths,
)
from hedge_pipeline.quant.risk import parse_criterion

E1 = HedgingProblem(cost=1e-3)
# One 64-step rollout and one 64-sample minibatch per SB3 update: seconds, not minutes.
TINY = sb3.SB3Settings(n_envs=2, n_steps=32, batch_size=64)


def _episode(env: sb3.SameProblem, act) -> tuple[list[float], list[float]]:
    """Drive one episode with ``act(obs)``; the rewards and the hedges the env held."""
    obs, _ = env.reset(seed=0)
    rewards, hedges, terminated = [], [], False
    while not terminated:
        obs, reward, terminated, _, _ = env.step(act(obs))
        rewards.append(reward)
        hedges.append(float(obs[PREV_HEDGE]))
    return rewards, hedges


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_same_problem_rewards_are_shaped_increments_marked_to_black_scholes(lam):
    paths = simulate_paths(E1, 1, torch.Generator().manual_seed(3))
    env = sb3.SameProblem(HedgingEnv(E1, paths=paths[0]), lam)
    corrections = iter(np.linspace(-0.1, 0.1, E1.n_steps, dtype=np.float32))
    rewards, hedges = _episode(env, lambda obs: np.array([next(corrections)], dtype=np.float32))

    held = torch.tensor([hedges])
    x = step_increments(E1, paths, held)[0].double()
    torch.testing.assert_close(
        torch.tensor(rewards, dtype=torch.float64), x - lam * x * x, atol=2e-6, rtol=0
    )
    if lam == 0.0:  # the marks telescope: the rewards add up to P&L + V_0
        total = float(pnl(E1, paths, held)[0]) + book_price(E1)
        assert sum(rewards) == pytest.approx(total, abs=1e-5)


def test_sb3_hedger_holds_in_the_simulator_what_sb3_holds_in_the_env():
    policy, run = sb3.train_sb3_ppo(E1, parse_criterion("entropic:1"), 64, TINY)
    assert run.env_steps == 64
    paths = simulate_paths(E1, 1, torch.Generator().manual_seed(5))
    env = sb3.SameProblem(HedgingEnv(E1, paths=paths[0]), 0.5)
    _, env_hedges = _episode(env, lambda obs: policy.model.predict(obs, deterministic=True)[0])
    with torch.no_grad():
        simulated = rollout(E1, paths, policy)[1][0]
    torch.testing.assert_close(simulated, torch.tensor(env_hedges), atol=1e-6, rtol=0)


def test_sb3_training_leaves_no_log_folder_behind(tmp_path, monkeypatch):
    """SB3's default logger makes $TMPDIR/SB3-<date> on every learn(), even at verbose=0."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sb3.train_sb3_ppo(E1, parse_criterion("entropic:1"), 64, TINY)
    assert list(tmp_path.iterdir()) == []


def test_bench_env_ppo_section_prices_both_policies_on_the_same_paths(monkeypatch):
    evaluated = []

    def spy(problem, paths, policy):
        evaluated.append((policy, paths))
        return rollout(problem, paths, policy)

    monkeypatch.setattr(sb3, "rollout", spy)
    tiny = functools.partial(sb3.compare_ppo, paths_per_iteration=64, eval_paths=2000, sb3=TINY)
    monkeypatch.setattr(bench_env, "compare_ppo", tiny)
    report = bench_env.run(
        num_envs=16, steps=31, single_steps=31, repeats=1, ppo=True, ppo_env_steps=64 * 30
    )
    ppo = json.loads(json.dumps(report))["ppo"]

    runs = ("ours", "sb3", "ours_tenth_time")
    assert ppo["evaluation"]["hedgers"] == [*runs, "no_hedge", "bs_delta"]
    for name in runs:
        numbers = ppo[name]
        assert numbers["env_steps_per_second"] > 0 and numbers["cpu_seconds"] > 0
        assert {"price", "mean_pl", "std_pl", "es10", "rollout_steps_per_second"} <= set(numbers)
    assert ppo["ours"]["env_steps"] == ppo["sb3"]["env_steps"] == 64 * 30
    assert ppo["speedup"] == pytest.approx(
        ppo["ours"]["env_steps_per_second"] / ppo["sb3"]["env_steps_per_second"]
    )
    assert set(ppo["baselines"]) == {"no_hedge", "bs_delta"}
    assert ppo["ours_minus_sb3_price"]["same_env_steps"] == pytest.approx(
        ppo["ours"]["price"] - ppo["sb3"]["price"]
    )
    # The λ reference rollout (Black–Scholes delta on training-seed paths) comes first; then
    # ours, SB3's, the second ours and the baselines, all on one evaluation tensor.
    on_eval = evaluated[1:]
    assert [type(policy) for policy, _ in on_eval[:4]] == [
        MLPPolicy,
        sb3.SB3Hedger,
        MLPPolicy,
        NoHedge,
    ]
    assert len(on_eval) == 5 and all(paths is on_eval[0][1] for _, paths in on_eval)
    assert on_eval[0][1].shape == (2000, E1.n_steps + 1)
