"""Stable-Baselines3's best case: every path of a rollout stepped at once in its own ``VecEnv``.

The single-path env (``hedge_pipeline/Hedging-v0`` under :class:`~.sb3.SameProblem`) is what a
per-step library gets by default, and SB3 spends 97 % of its time stepping it (benchmarks/env.md).
A fair comparison of the *learners* gives SB3 an environment that costs next to nothing: here
all ``num_envs`` paths advance together as NumPy arrays, behind SB3's own ``VecEnv`` interface, so
no ``DummyVecEnv`` loop and no per-path Python remain. The market (paths, features, the book's
Black–Scholes marks) is computed once per episode by the simulator's own vectorized functions;
a step is then an array lookup, one trade cost and the shaped reward. The problem is posed as
:class:`~.sb3.SameProblem` poses it (action = correction to the BS delta, reward x − λ·x² with x
the step's P&L marked to Black–Scholes), so SB3 solves what our PPO solves.

This module imports ``stable_baselines3`` (a development dependency) at the top: import it only
where SB3 runs (:func:`~.sb3.train_sb3_ppo`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from hedge_pipeline.hedging.envs import HedgingEnv
from hedge_pipeline.hedging.ppo import book_values
from hedge_pipeline.hedging.simulator import (
    DELTA,
    HedgingProblem,
    _features,
    market_features,
    simulate_paths,
    trade_costs,
)

__all__ = ["MarkedVecEnv"]


class MarkedVecEnv(VecEnv):
    """``num_envs`` paths of ``problem`` in lockstep, posed as :class:`~.sb3.SameProblem`.

    Every episode has ``n_steps`` steps, so all sub-envs end together; SB3's convention then
    returns the next episode's first observations at once (the final one in each info's
    ``terminal_observation``). Paths come from a torch generator seeded by :meth:`seed` (or 0).
    Spaces are the single env's (:class:`~hedge_pipeline.hedging.envs.HedgingEnv`), so SB3 builds
    the same policy as on the per-path env; corrections are clipped by SB3's ``predict`` to the
    action box, the hedge to ``max_hedge``.
    """

    def __init__(self, problem: HedgingProblem, num_envs: int, lam: float) -> None:
        single = HedgingEnv(problem)
        self.render_mode = None  # read back by VecEnv.__init__ through get_attr
        super().__init__(num_envs, single.observation_space, single.action_space)
        self.problem, self.lam = problem, lam
        self.max_hedge = float(single.action_space.high[0])
        self._generator = torch.Generator().manual_seed(0)
        self._actions = np.zeros(num_envs, dtype=np.float32)

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        if seed is not None:
            self._generator = torch.Generator().manual_seed(seed)
        return [seed] * self.num_envs

    def reset(self) -> np.ndarray:
        """Draw an episode: prices, market features and the book's marks of every path at once."""
        with torch.no_grad():
            paths = simulate_paths(self.problem, self.num_envs, self._generator)
            self._spot = paths.double().numpy()
            self._features = market_features(self.problem, paths).numpy()
            self._marks = book_values(self.problem, paths).double().numpy()
        self._hedge = np.zeros(self.num_envs)
        self._t = 0
        return self._observe(self._features[:, 0])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        t = self._t
        hedge = np.clip(
            self._features[:, t, DELTA] + self._actions, -self.max_hedge, self.max_hedge
        )
        cost = trade_costs(
            self.problem, torch.from_numpy(hedge - self._hedge), torch.from_numpy(self._spot[:, t])
        ).numpy()
        x = hedge * (self._spot[:, t + 1] - self._spot[:, t]) - cost
        x -= self._marks[:, t + 1] - self._marks[:, t]
        rewards = (x - self.lam * x * x).astype(np.float32)
        self._hedge, self._t = hedge, t + 1
        if self._t < self.problem.n_steps:
            dones = np.zeros(self.num_envs, dtype=bool)
            return self._observe(self._features[:, self._t]), rewards, dones, self._infos()
        at_expiry = _features(self.problem, torch.from_numpy(self._spot[:, -1]).float(), 0.0)
        final = self._observe(at_expiry.numpy())
        infos = [{"terminal_observation": row} for row in final]
        return self.reset(), rewards, np.ones(self.num_envs, dtype=bool), infos

    def _observe(self, market: np.ndarray) -> np.ndarray:
        return np.concatenate([market, self._hedge[:, None]], axis=1).astype(np.float32)

    def _infos(self) -> list[dict[str, Any]]:
        return [{} for _ in range(self.num_envs)]

    def close(self) -> None:
        """Nothing to release: the paths are arrays."""

    # The rest of VecEnv's interface addresses individual sub-envs, which this env does not
    # have: SB3's PPO calls none of it except ``env_is_wrapped`` (for Monitor warnings).
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise NotImplementedError("MarkedVecEnv's sub-envs are rows of one array")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError("MarkedVecEnv's sub-envs are rows of one array")

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: VecEnvIndices) -> Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)
