"""A registered ``hedge-specialist-<weekly_code>`` served: one hedging decision per state row.

A state is the observation the policy reads at one decision, with the columns named as the
spec's problem names them (``HedgingProblem.observations``, in that order):

* ``log_moneyness``, ``time_to_expiry`` (years), ``delta``, ``scaled_gamma``: the book's
  market columns (``hedging.simulator.market_features``: the book's log-moneyness against its
  reference strike, its delta and S·Γ·σ·√τ at the reference vol);
* ``option_delta``, ``option_scaled_gamma``: the hedge option's, for a delta-gamma specialist;
* the context columns the specialist was trained with (``rv_forecast``, ``rv_forecast_std``,
  ``turbulence``, ``log_next_interval``);
* ``prev_hedge`` (and ``prev_option``): the position held coming into the decision, in units
  of the underlying (and of the hedge option).

``predict`` returns one row per state: ``hedge``, the position in the underlying to hold until
the next decision, and ``option``, the hedge option's, for a delta-gamma specialist. A whole
episode is then the rollout fed back one decision at a time, each row's ``prev_hedge`` the
previous row's ``hedge``: exactly ``hedging.simulator.rollout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from hedge_pipeline.hedging.simulator import HedgingProblem, market_features
from hedge_pipeline.stages.specialists.artifact import SpecialistSpec, load_policy

OUTPUTS = ("hedge", "option")  # underlying, then the hedge option of a delta-gamma specialist
EXAMPLE_ROWS = 3


@dataclass
class ServedSpecialist:
    """A specialist's policy and its problem (``registry.pyfunc.Served``)."""

    policy: nn.Module
    spec: SpecialistSpec
    params: Mapping[str, Any]

    @property
    def problem(self) -> HedgingProblem:
        return self.spec.problem()

    def predict(self, states: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
        """The policy's positions for ``states`` (module docstring).

        Raises:
            ValueError: a column the policy reads is missing.
        """
        problem = self.problem
        columns = list(problem.observations)
        missing = [c for c in columns if c not in states.columns]
        if missing:
            raise ValueError(
                f"hedge-specialist-{self.spec.weekly_code}: states lack the columns "
                f"{missing}; a state row needs {columns}"
            )
        dtype = next(self.policy.parameters()).dtype
        obs = torch.tensor(states[columns].to_numpy(), dtype=dtype)
        n_inst = problem.n_instruments
        prev = obs[:, -n_inst:] if n_inst > 1 else obs[:, -1]
        with torch.no_grad():
            held = self.policy(obs, prev).reshape(len(states), n_inst)
        return pd.DataFrame(held.numpy(), columns=list(OUTPUTS[:n_inst]), index=states.index)

    def example(self) -> pd.DataFrame:
        """The first decisions of an episode that starts at the book's mean strike and stays
        there, at the reference vol, with no context and no position yet."""
        problem = replace(self.problem, n_steps=EXAMPLE_ROWS)
        strike = sum(problem.book.strikes) / len(problem.book.strikes)
        spot = torch.full((1, EXAMPLE_ROWS + 1), strike, dtype=torch.float64)
        feats = market_features(problem, spot)[0]
        prev = torch.zeros((EXAMPLE_ROWS, problem.n_instruments), dtype=feats.dtype)
        rows = torch.cat([feats, prev], dim=-1)
        return pd.DataFrame(rows.numpy(), columns=list(problem.observations))


def load(directory: Path) -> ServedSpecialist:
    """A registered specialist's folder, loaded by the stage's own :func:`load_policy`."""
    policy, spec = load_policy(directory)
    return ServedSpecialist(policy, spec, {})
