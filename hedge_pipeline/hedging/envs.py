"""The hedging problem (docs/design.md §7) as Gymnasium environments: one batched, one single-path.

Both faces drive the same torch state, :class:`_Episodes`, whose P&L comes from the simulator
itself, so an RL agent and the pathwise deep hedger are scored on one definition of P&L:

* :class:`HedgingVectorEnv` (``gymnasium.vector.VectorEnv``) steps ``num_envs`` paths of one
  :class:`~hedge_pipeline.hedging.simulator.HedgingProblem` as tensors: the batched face,
  tens of times faster than stepping single envs (docs/notes.md, Training throughput).
* :class:`HedgingEnv` (``gymnasium.Env``) is the same thing with one path: the face that
  ``gymnasium.utils.env_checker.check_env`` and per-step libraries accept.

Observation: the simulator's :data:`~hedge_pipeline.hedging.simulator.OBSERVATIONS`
(log-moneyness, time to expiry, book delta, scaled gamma, previous hedge), float32.
Action: the position in the underlying to hold over the next step, float32 in
``[-max_hedge, max_hedge]`` (default 2·Σ|w_i|, twice the most the book's delta can reach);
actions outside are clipped, as a hedge limit would. Reward of the step deciding δ_t::

    reward_t = reward_scale · (δ_t·(S_{t+1} − S_t) − cost(δ_t − δ_{t−1}, S_t)
                              − [t = N−1]·payoff(S_N))

so the rewards of an episode sum to ``reward_scale · pnl(problem, paths, hedges)`` (the E1
formula of the simulator). ``reward_scale`` exists because P&L per step is ~1e-3 of the spot:
PPO-style learners want rewards of order one (training-throughput.md saw PPO fail unscaled).
The cost is the simulator's own cost model, taken as minus the :func:`pnl` of a bare trade on a
path that does not move, so fees and slippage can never drift apart from the simulator's.

Every episode lasts ``n_steps`` steps and ends with ``terminated=True`` at maturity (it is a
true end, not a time limit: ``truncated`` is always False). The observation returned with it
is the features at S_N with zero time to expiry and the last hedge. Paths are simulated from a
torch generator seeded by ``reset(seed=...)``; ``paths=`` instead replays fixed paths every
episode (historical replay, or driving two envs with the same prices in tests).

Importing this module registers ``hedge_pipeline/Hedging-v0`` (see
:mod:`hedge_pipeline.hedging.registration`).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from hedge_pipeline.hedging.registration import register_envs
from hedge_pipeline.hedging.simulator import (
    OBSERVATIONS,
    Book,
    HedgingProblem,
    _features,
    market_features,
    payoff,
    pnl,
    simulate_paths,
)

__all__ = ["HedgingEnv", "HedgingVectorEnv"]

PathsLike = Tensor | np.ndarray


class _Episodes:
    """``n_paths`` hedging episodes in lockstep: the one copy of the dynamics both envs use.

    Market features for the whole episode are computed once at :meth:`start` (they do not depend
    on the hedge), so a step is a column lookup plus the P&L increment. ``done`` says the
    episodes are at maturity (or never began): both envs need a :meth:`start` before stepping.
    """

    def __init__(
        self,
        problem: HedgingProblem,
        n_paths: int,
        reward_scale: float,
        max_hedge: float,
        paths: PathsLike | None,
        dtype: torch.dtype,
    ) -> None:
        if n_paths < 1:
            raise ValueError(f"need at least one path, got {n_paths}")
        self.problem, self.n_paths = problem, n_paths
        self.reward_scale, self.max_hedge, self.dtype = reward_scale, max_hedge, dtype
        # No book and one step: pnl of a trade on a flat path is then exactly minus its cost.
        self._trade_only = replace(problem, book=Book(weights=(0.0,)), n_steps=1)
        self._fixed: Tensor | None = None
        if paths is not None:
            fixed = torch.as_tensor(paths, dtype=dtype).reshape(n_paths, problem.n_steps + 1)
            self._fixed = fixed.clone()
        self._generator: torch.Generator | None = None
        self.t = 0
        self.done = True

    def seed(self, seed: int) -> None:
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def seeded(self) -> bool:
        return self._generator is not None

    def start(self) -> Tensor:
        """Draw (or replay) paths and return the observations at t = 0, shape (n_paths, 5)."""
        self.done = False
        if self._fixed is not None:
            self.paths = self._fixed
        else:
            self.paths = simulate_paths(self.problem, self.n_paths, self._generator, self.dtype)
        self.features = market_features(self.problem, self.paths)
        self.hedge = torch.zeros(self.n_paths, dtype=self.dtype)
        self.t = 0
        return self._observe(self.features[:, 0])

    def step(self, action: np.ndarray) -> tuple[Tensor, Tensor, bool]:
        """Hold ``action`` over [t, t+1]: observations after it, rewards, whether at maturity."""
        hedge = torch.as_tensor(action, dtype=self.dtype).reshape(self.n_paths)
        hedge = hedge.clamp(-self.max_hedge, self.max_hedge)
        t, spot = self.t, self.paths[:, self.t]
        flat = torch.stack([spot, spot], dim=1)
        minus_cost = pnl(self._trade_only, flat, (hedge - self.hedge).unsqueeze(1))
        reward = hedge * (self.paths[:, t + 1] - spot) + minus_cost
        self.hedge, self.t = hedge, t + 1
        done = self.t == self.problem.n_steps
        if done:
            reward = reward - payoff(self.problem, self.paths[:, -1])
            market = _features(self.problem, self.paths[:, -1], 0.0)
        else:
            market = self.features[:, self.t]
        observation = self._observe(market)
        self.done = done
        return observation, self.reward_scale * reward, done

    def _observe(self, market: Tensor) -> Tensor:
        return torch.cat([market, self.hedge.unsqueeze(1)], dim=1)


def _spaces(problem: HedgingProblem, max_hedge: float) -> tuple[spaces.Box, spaces.Box]:
    """Single-path observation and action boxes.

    The book's |delta| is at most Σ|w_i| and its scaled gamma (Σ w_i·φ(d1_i)) below that, so
    those bounds are safe; log-moneyness is unbounded.
    """
    size = sum(abs(w) for w in problem.book.weights)
    inf = np.inf
    low = np.array([-inf, 0.0, -size, -size, -max_hedge], dtype=np.float32)
    high = np.array([inf, problem.maturity, size, size, max_hedge], dtype=np.float32)
    assert len(low) == len(OBSERVATIONS)
    observation = spaces.Box(low, high, dtype=np.float32)
    action = spaces.Box(-max_hedge, max_hedge, shape=(1,), dtype=np.float32)
    return observation, action


def _start(episodes: _Episodes, seed: int | None, np_random: np.random.Generator) -> np.ndarray:
    """Both envs' reset: seed the episodes, start them, return the first observations.

    The torch generator is seeded from ``seed``; unseeded, from one draw of ``np_random``, once:
    ``reset(seed=None)`` must leave ``np_random`` untouched once seeded (check_env asserts it),
    so later episodes continue the torch stream instead of reseeding.
    """
    if seed is not None:
        episodes.seed(seed)
    elif not episodes.seeded:
        episodes.seed(int(np_random.integers(2**63 - 1)))
    return _numpy(episodes.start())


class _EpisodesEnv:
    """The construction both envs share: ``num_envs`` lockstep :class:`_Episodes` of one
    problem (arguments: :class:`HedgingVectorEnv`), then each env's spaces. The single-path
    env is this with ``num_envs=1`` fixed, so the two take the same arguments by construction.
    """

    def __init__(
        self,
        num_envs: int = 1,
        problem: HedgingProblem | None = None,
        reward_scale: float = 1.0,
        max_hedge: float | None = None,
        paths: PathsLike | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        problem = problem if problem is not None else HedgingProblem()
        if problem.instrument is not None or problem.context:
            raise ValueError(
                "the gymnasium envs hedge E1-style problems: no hedge option, no context"
            )
        if max_hedge is None:
            max_hedge = 2.0 * (sum(abs(w) for w in problem.book.weights) or 1.0)
        if not max_hedge > 0.0:
            raise ValueError(f"max_hedge must be > 0, got {max_hedge}")
        self._episodes = _Episodes(problem, num_envs, reward_scale, max_hedge, paths, dtype)
        self.problem = problem
        self._set_spaces(*_spaces(problem, max_hedge))

    def _set_spaces(self, observation: spaces.Box, action: spaces.Box) -> None:
        """Take the single-path observation and action boxes (:func:`_spaces`)."""
        raise NotImplementedError


class HedgingVectorEnv(_EpisodesEnv, VectorEnv):
    """``num_envs`` hedging episodes of one problem, stepped together as tensors.

    Autoreset follows Gymnasium's ``NEXT_STEP`` mode. All episodes have ``n_steps`` steps, so
    they end together: the step returning ``terminated`` all True is followed by one step whose
    actions are ignored and which resets every sub-env, returning the new first observations,
    zero rewards and all-False ``terminated``/``truncated``. Infos are empty dicts.

    Args:
        num_envs: paths per batch.
        problem: the market, book and costs (default: E1, ``HedgingProblem()``).
        reward_scale: multiplies every reward (module doc); 1 leaves rewards in P&L units.
        max_hedge: action bound in units of the underlying (default 2·Σ|w_i|).
        paths: optional fixed prices (num_envs, n_steps + 1), replayed every episode.
        dtype: torch dtype of the internal simulation (observations are float32 regardless).
    """

    metadata: ClassVar[dict[str, Any]] = {
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": [],
    }

    def _set_spaces(self, observation: spaces.Box, action: spaces.Box) -> None:
        self.num_envs = self._episodes.n_paths
        self.single_observation_space, self.single_action_space = observation, action
        self.observation_space = batch_space(observation, self.num_envs)
        self.action_space = batch_space(action, self.num_envs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return _start(self._episodes, seed, self.np_random), {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        if self._episodes.done:
            obs, _ = self.reset()
            return obs, np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), {}
        obs, reward, done = self._episodes.step(actions)
        terminated = np.full(n, done, dtype=bool)
        return _numpy(obs), reward.double().numpy(), terminated, np.zeros(n, dtype=bool), {}


class HedgingEnv(_EpisodesEnv, gym.Env[np.ndarray, np.ndarray]):
    """One hedging episode at a time: the vector env's episode state with a single path.

    Same arguments as the vector env less ``num_envs``; ``paths`` is one path (n_steps + 1,).
    Stepping after ``terminated`` without ``reset`` raises, as there is no price beyond
    maturity.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    __init__ = functools.partialmethod(_EpisodesEnv.__init__, 1)  # num_envs=1

    def _set_spaces(self, observation: spaces.Box, action: spaces.Box) -> None:
        self.observation_space, self.action_space = observation, action

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return _start(self._episodes, seed, self.np_random)[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._episodes.done:
            raise RuntimeError("the episode is over (or never began): call reset()")
        obs, reward, done = self._episodes.step(action)
        return _numpy(obs)[0], float(reward[0]), done, False, {}


def _numpy(obs: Tensor) -> np.ndarray:
    return obs.to(torch.float32).numpy()


register_envs()
