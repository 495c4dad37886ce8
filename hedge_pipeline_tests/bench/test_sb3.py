"""PPO vs Stable-Baselines3: SB3 sees our PPO's problem; every policy is priced on one path set."""

from __future__ import annotations

import itertools
import json
import tempfile

import numpy as np
import pytest
import torch

from hedge_pipeline.bench import sb3
from hedge_pipeline.hedging.baselines import NoHedge
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


def test_ppo_comparison_times_ours_to_sb3s_final_price_on_one_path_set():
    tiny = sb3.SB3Settings(env="vectorized", n_envs=16, n_steps=30, batch_size=240)
    ppo = json.loads(json.dumps(sb3.compare_ppo(E1, env_steps=960, eval_paths=2000, sb3=tiny)))

    # The same batch geometry: 16 paths of 30 steps a rollout, SB3's minibatch and epochs.
    assert ppo["settings"]["ours"] | {"train_ppo": None} == {
        "paths_per_iteration": 16,
        "minibatch_size": 240,
        "update_epochs": 4,
        "lr": 3e-4,
        "train_ppo": None,
    }
    assert ppo["sb3"]["env_steps"] == 960
    curve = ppo["ours_curve"]
    assert [p["env_steps"] for p in curve] == [480 * (i + 1) for i in range(len(curve))]
    assert all(a["cpu_seconds"] < b["cpu_seconds"] for a, b in itertools.pairwise(curve))
    target = ppo["sb3"]["price"]
    # The run stops at the first iteration at SB3's price past SB3's steps, or at the CPU cap.
    last = curve[-1]
    assert (last["price"] <= target and last["env_steps"] >= 960) or last["cpu_seconds"] >= (
        4.0 * ppo["sb3"]["cpu_seconds"]
    )
    reached = [p for p in curve if p["price"] <= target]
    if reached:
        first = reached[0]
        assert ppo["time_to_sb3_price"]["ours_env_steps"] == first["env_steps"]
        assert ppo["time_to_sb3_price"]["cpu_speedup"] == pytest.approx(
            ppo["sb3"]["cpu_seconds"] / first["cpu_seconds"]
        )
    else:
        assert ppo["time_to_sb3_price"] is None
    assert ppo["ours"] == next(p for p in curve if p["env_steps"] >= 960)
    assert ppo["ours_minus_sb3_price"]["same_env_steps"] == pytest.approx(
        ppo["ours"]["price"] - target
    )
    pathwise = ppo["pathwise_tenth_time"]
    assert pathwise["epochs"] >= 1 and pathwise["seconds"] > 0 and pathwise["price"] > 0
    # Priced on the same evaluation paths as the baselines: BS delta's price is its own.
    paths = simulate_paths(E1, 2000, torch.Generator().manual_seed(ppo["evaluation"]["seed"]))
    assert ppo["evaluation"]["sha256_16"] == sb3._digest(paths)
    assert ppo["baselines"]["no_hedge"]["mean_pl"] == pytest.approx(
        float(rollout(E1, paths, NoHedge())[0].double().mean())
    )


def _vec_episode(env, corrections: np.ndarray):
    """One vectorized episode: rewards (n, n_steps), the hedges held, the infos at the end."""
    from hedge_pipeline.hedging.simulator import DELTA

    obs = env.reset()
    rewards, hedges = [], []
    for t in range(E1.n_steps):
        env.step_async(corrections[:, t])
        next_obs, reward, dones, infos = env.step_wait()
        rewards.append(reward)
        hedges.append(np.clip(obs[:, DELTA] + corrections[:, t], -env.max_hedge, env.max_hedge))
        obs = next_obs
    return np.stack(rewards, axis=1), np.stack(hedges, axis=1), dones, infos, obs


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_vectorized_env_rewards_are_shaped_increments_marked_to_black_scholes(lam):
    from hedge_pipeline.bench.sb3_vec_env import MarkedVecEnv

    env = MarkedVecEnv(E1, 8, lam)
    env.seed(3)
    corrections = np.random.default_rng(0).normal(0.0, 0.2, (8, E1.n_steps))
    rewards, hedges, dones, infos, first = _vec_episode(env, corrections)

    paths = simulate_paths(E1, 8, torch.Generator().manual_seed(3))
    x = step_increments(E1, paths, torch.tensor(hedges, dtype=torch.float32)).double()
    torch.testing.assert_close(
        torch.tensor(rewards, dtype=torch.float64), x - lam * x * x, atol=2e-6, rtol=0
    )
    # Every path ends at maturity together; the final observation holds the last hedge at τ = 0.
    assert dones.all()
    final = np.stack([info["terminal_observation"] for info in infos])
    np.testing.assert_allclose(final[:, PREV_HEDGE], hedges[:, -1], atol=1e-6)
    assert (final[:, 1] == 0.0).all()
    # ... and SB3 gets the next episode's first observations: new paths, no position.
    assert (first[:, PREV_HEDGE] == 0.0).all()
    np.testing.assert_allclose(first[:, 1], E1.maturity, rtol=1e-6)
