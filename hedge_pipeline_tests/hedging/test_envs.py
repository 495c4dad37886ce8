"""The Gymnasium faces of the hedging simulator: API conformance and agreement with ``pnl``."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from hedge_pipeline.bench.env import run as bench_env
from hedge_pipeline.hedging.baselines import BlackScholesDelta
from hedge_pipeline.hedging.envs import HedgingEnv, HedgingVectorEnv
from hedge_pipeline.hedging.registration import ENV_ID
from hedge_pipeline.hedging.simulator import (
    DELTA,
    Book,
    HedgingProblem,
    Instrument,
    pnl,
    rollout,
    simulate_paths,
)

# Every cost term on, and a two-option book, so the step decomposition is tested in full.
PROBLEM = HedgingProblem(
    book=Book(strikes=(0.95, 1.05), is_call=(False, True), weights=(0.5, 1.0)),
    n_steps=10,
    cost=1e-3,
    slippage=2e-3,
    fixed_fee=1e-5,
)
N = 6


@pytest.fixture(scope="module")
def paths() -> torch.Tensor:
    return simulate_paths(PROBLEM, N, torch.Generator().manual_seed(3), torch.float64)


def test_single_env_passes_check_env():
    check_env(gym.make(ENV_ID).unwrapped, skip_render_check=True)
    check_env(HedgingEnv(PROBLEM), skip_render_check=True)


def test_make_vec_builds_the_batched_env():
    envs = gym.make_vec(ENV_ID, num_envs=8, problem=PROBLEM)
    assert isinstance(envs, HedgingVectorEnv)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (8, 5) and obs.dtype == np.float32
    assert envs.action_space.shape == (8, 1)


def test_batched_env_matches_single_envs_on_the_same_paths(paths):
    batched = HedgingVectorEnv(N, PROBLEM, paths=paths, dtype=torch.float64)
    singles = [HedgingEnv(PROBLEM, paths=paths[i], dtype=torch.float64) for i in range(N)]
    actions = np.random.default_rng(0).uniform(-2.0, 2.0, (PROBLEM.n_steps, N, 1))
    obs, _ = batched.reset(seed=1)
    np.testing.assert_array_equal(obs, np.stack([env.reset(seed=1)[0] for env in singles]))
    for action in actions.astype(np.float32):
        obs, reward, terminated, truncated, _ = batched.step(action)
        steps = [env.step(a) for env, a in zip(singles, action, strict=True)]
        np.testing.assert_array_equal(obs, np.stack([s[0] for s in steps]))
        np.testing.assert_allclose(reward, [s[1] for s in steps], rtol=0, atol=1e-15)
        assert terminated.tolist() == [s[2] for s in steps]
        assert not truncated.any() and not any(s[3] for s in steps)
    assert terminated.all()


@pytest.mark.parametrize("reward_scale", [1.0, 100.0])
def test_episode_rewards_sum_to_simulator_pnl_for_delta_hedging(paths, reward_scale):
    env = HedgingVectorEnv(N, PROBLEM, reward_scale=reward_scale, paths=paths, dtype=torch.float64)
    obs, _ = env.reset(seed=0)
    total, hedges, terminated = np.zeros(N), [], np.zeros(N, dtype=bool)
    while not terminated.any():
        # The float32 observation's delta, as an agent would act on it.
        action = obs[:, DELTA : DELTA + 1]
        hedges.append(action[:, 0])
        obs, reward, terminated, _, _ = env.step(action)
        total += reward
    assert terminated.all() and len(hedges) == PROBLEM.n_steps
    expected = pnl(PROBLEM, paths, torch.tensor(np.stack(hedges, axis=1), dtype=torch.float64))
    np.testing.assert_allclose(total, reward_scale * expected.numpy(), rtol=1e-12, atol=1e-15)
    # And the float32-rounded delta differs from the exact rollout only by float32 noise.
    exact = rollout(PROBLEM, paths, BlackScholesDelta())[0].numpy()
    np.testing.assert_allclose(total / reward_scale, exact, atol=1e-6)


def test_next_step_autoreset_after_maturity():
    env = HedgingVectorEnv(3, PROBLEM)
    first, _ = env.reset(seed=5)
    zero = np.zeros((3, 1), dtype=np.float32)
    for _ in range(PROBLEM.n_steps):
        _, _, terminated, _, _ = env.step(zero)
    assert terminated.all()
    obs, reward, terminated, truncated, _ = env.step(zero)
    assert not terminated.any() and not truncated.any() and (reward == 0).all()
    np.testing.assert_array_equal(obs, first)  # every path starts at s0 with no hedge
    obs, _, terminated, _, _ = env.step(np.full((3, 1), 0.5, dtype=np.float32))
    assert not terminated.any()  # a fresh episode is running, one step in
    np.testing.assert_allclose(obs[:, 1], PROBLEM.maturity - PROBLEM.dt, rtol=1e-6)
    np.testing.assert_array_equal(obs[:, -1], 0.5)


def _episode_rewards(env: HedgingVectorEnv, seed: int | None) -> np.ndarray:
    env.reset(seed=seed)
    action = np.full((env.num_envs, 1), 0.5, dtype=np.float32)
    return np.stack([env.step(action)[1] for _ in range(PROBLEM.n_steps)])


def test_reset_is_deterministic_given_the_seed():
    a, b = HedgingVectorEnv(4, PROBLEM), HedgingVectorEnv(4, PROBLEM)
    first = _episode_rewards(a, 7)
    np.testing.assert_array_equal(first, _episode_rewards(b, 7))
    second = _episode_rewards(a, None)  # continues the seeded stream: new paths
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, _episode_rewards(b, None))
    assert not np.array_equal(first, _episode_rewards(HedgingVectorEnv(4, PROBLEM), 8))


def test_actions_are_clipped_to_the_hedge_limit(paths):
    env = HedgingVectorEnv(N, PROBLEM, paths=paths, dtype=torch.float64, max_hedge=1.0)
    env.reset(seed=0)
    obs, *_ = env.step(np.full((N, 1), 5.0, dtype=np.float32))
    np.testing.assert_array_equal(obs[:, -1], 1.0)


def test_single_env_refuses_to_step_past_maturity():
    env = HedgingEnv(PROBLEM)
    env.reset(seed=0)
    for _ in range(PROBLEM.n_steps):
        env.step(np.zeros(1, dtype=np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1, dtype=np.float32))


def test_bench_env_reports_both_faces():
    report = bench_env(num_envs=16, steps=31, single_steps=31, repeats=1)
    assert report["batched"]["env_steps_per_second"] > 0
    assert report["single"]["env_steps_per_second"] > 0
    assert report["speedup"] > 0 and report["date"]


def test_envs_refuse_problems_they_do_not_model():
    with_option = HedgingProblem(instrument=Instrument(strike=1.0))
    with_context = HedgingProblem(context=("rv_forecast",))
    for problem in (with_option, with_context):
        with pytest.raises(ValueError, match="E1-style problems: no hedge option, no context"):
            HedgingEnv(problem)
