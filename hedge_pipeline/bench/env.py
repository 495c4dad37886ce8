"""Stepping speed of the hedging environments: batched tensors vs one path per ``step``.

Measures environment transitions per second (``env_steps_per_second``) of
:class:`~hedge_pipeline.hedging.envs.HedgingVectorEnv` with ``num_envs`` paths against the
single-path :class:`~hedge_pipeline.hedging.envs.HedgingEnv`, on the E1 problem with its
cost (1e-3), both acting Black–Scholes delta read off the observation (what a trained policy
costs is not part of this: it is the environment's overhead that is compared). The envs are
used directly, without ``gym.make``'s checker wrappers, so the figures are the envs' own.

A transition is one decision of one path: the batched env's autoreset steps (one in
``n_steps + 1``, actions ignored) and the single env's ``reset`` calls are timed but not
counted, so both faces are charged the same for starting episodes. The two faces run in
alternation ``repeats`` times and each reports its median, so that load from other processes
on a shared machine slows both alike and the ratio stays meaningful.

Torch runs with ``threads`` intra-op threads, 1 by default: a batch of 1024 paths is too small
for a second thread to pay, and on a loaded 2-core machine it makes things far worse (an
``exp`` over 1024 × 31 floats measured 50 µs on one thread and 8 ms on two).

The single env pays for reusing the simulator's ``pnl`` on one-element tensors every step
(about 60 % of its ~0.25 ms step), so it is slower than a lean NumPy per-step env (70–87 k/s in
docs/notes.md, Training throughput); ``speedup`` is against this repository's single env.

With ``ppo=True`` (what ``hedge bench env`` does unless ``--no-ppo``) the report also has a
``ppo`` section: our PPO against Stable-Baselines3's on its best case (SB3 stepping every path
in one array), the time each takes to SB3's final risk on one set of evaluation paths
(:func:`hedge_pipeline.bench.sb3.compare_ppo`; needs the ``dev`` extra). It is off by default
here because it takes minutes, the stepping part seconds.

``run()`` returns a JSON-serialisable dict.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time

import numpy as np

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.bench.sb3 import PPO_ENV_STEPS, compare_ppo
from hedge_pipeline.harness.threads import torch_threads
from hedge_pipeline.hedging.envs import HedgingEnv, HedgingVectorEnv
from hedge_pipeline.hedging.simulator import DELTA, HedgingProblem


def _batched_rate(env: HedgingVectorEnv, steps: int, seed: int) -> float:
    """Transitions per second over ``steps`` calls of ``step`` (autoreset calls not counted)."""
    obs, _ = env.reset(seed=seed)
    decisions, terminated = 0, np.zeros(env.num_envs, dtype=bool)
    start = time.perf_counter()
    for _ in range(steps):
        decisions += 0 if terminated.any() else env.num_envs
        obs, _, terminated, _, _ = env.step(obs[:, DELTA : DELTA + 1])
    return decisions / (time.perf_counter() - start)


def _single_rate(env: HedgingEnv, steps: int, seed: int) -> float:
    """Transitions per second over ``steps`` decisions, resetting at maturity."""
    obs, _ = env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, _, _ = env.step(obs[DELTA : DELTA + 1])
        if terminated:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def run(
    num_envs: int = 1024,
    steps: int = 310,
    single_steps: int = 6_000,
    repeats: int = 3,
    seed: int = 0,
    threads: int = 1,
    ppo: bool = False,
    ppo_env_steps: int = PPO_ENV_STEPS,
) -> dict:
    """Run the suite; a JSON-serialisable report (see the module docstring).

    ``steps`` are calls of the batched env's ``step`` per repeat (310 = 10 episodes of E1's 30
    steps plus their autoreset steps); ``single_steps`` decisions of the single env per repeat.
    ``ppo`` adds the PPO comparison, each PPO training for ``ppo_env_steps`` env steps.
    """
    problem = HedgingProblem(cost=1e-3)
    batched, single = HedgingVectorEnv(num_envs, problem), HedgingEnv(problem)
    with torch_threads(threads):
        _batched_rate(batched, problem.n_steps + 1, seed)  # warm-up, untimed
        _single_rate(single, problem.n_steps, seed)
        rates: dict[str, list[float]] = {"batched": [], "single": []}
        for i in range(repeats):
            rates["batched"].append(_batched_rate(batched, steps, seed + i))
            rates["single"].append(_single_rate(single, single_steps, seed + i))
    batched_rate = statistics.median(rates["batched"])
    single_rate = statistics.median(rates["single"])
    report = {
        "suite": "env",
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "machine": machine_info("numpy", "torch", "gymnasium", "stable-baselines3")
        | {"torch_threads": threads},
        "config": {
            "num_envs": num_envs,
            "steps": steps,
            "single_steps": single_steps,
            "repeats": repeats,
            "seed": seed,
            "problem": "E1 (GBM, sigma 0.2, ATM call, 30 steps), cost 1e-3",
            "actions": "Black-Scholes delta from the observation",
        },
        "batched": {"env_steps_per_second": batched_rate, "repeats": rates["batched"]},
        "single": {"env_steps_per_second": single_rate, "repeats": rates["single"]},
        "speedup": batched_rate / single_rate,
    }
    if ppo:
        report["ppo"] = compare_ppo(problem, env_steps=ppo_env_steps, seed=seed, threads=threads)
    return report
