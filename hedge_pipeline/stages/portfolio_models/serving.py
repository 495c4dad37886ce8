"""A registered portfolio model served: ``hedge-ensemble``, ``hedge-joint`` or
``hedge-meta-controller`` positions for portfolio windows given as state rows.

A portfolio position depends on the path so far (the no-trade band carries the previous
position, each specialist its own), so the states are whole windows: one row per window, step
and code, ``window`` × ``step`` (0 … ``n_steps``, the last one the window's end) × ``code``
(every code of the model, ``spec.codes``), columns:

* ``window`` (int), ``step`` (int), ``code`` (str): the row's key;
* ``present`` (1/0): whether the code's book is in the window (an absent code's rows still
  need finite values; they are masked out of every sum, as in ``market.PortfolioEpisodes``);
* ``spot`` (the underlying), ``tau`` (years to the code's expiry), ``vol_0`` … ``vol_{K-1}``
  (the implied vol of each option of the code's book, in its registered order; NaN past its
  own book when books differ in size);
* the specialists' context columns (``rv_forecast``, ``rv_forecast_std``, ``turbulence``,
  ``log_next_interval``), read at steps 0 … ``n_steps - 1``;
* ``instrument_price``, ``instrument_vol``, ``instrument_cost``: the code's hedge option (mark,
  implied vol, cost per unit traded), when the specialists trade one.

``predict`` answers one row per state row: ``hedge``, the portfolio's position in the underlying
held from that step to the next (the same on every code's row of a step; NaN at the last step,
which has no decision), and ``option``, the code's hedge-option position, with hedge options.

The model is rebuilt around its specialists: their specs (books, observations) and, for the
meta-controller, their frozen weights are loaded from the registry the model came from
(``MLFLOW_TRACKING_URI``, as ``registry.versions.client``), by the versions its spec names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from hedge_pipeline.hedging.simulator import Episodes
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import ArtifactSpecError, load_weights
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    PortfolioProblem,
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.ensemble import member_positions
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes
from hedge_pipeline.stages.portfolio_models.train_ensemble import ensemble_of
from hedge_pipeline.stages.specialists.artifact import load_policy, model_name

KEYS = ("window", "step", "code")
INSTRUMENT_COLUMNS = ("instrument_price", "instrument_vol", "instrument_cost")
Positions = Callable[[PortfolioProblem, PortfolioEpisodes], Hedge]


@dataclass
class ServedPortfolio:
    """A portfolio model as the function from windows to positions (``registry.pyfunc.Served``)."""

    name: str
    problem: PortfolioProblem
    positions: Positions
    params: Mapping[str, Any]

    @property
    def n_vols(self) -> int:
        return max(len(p.book.strikes) for p in self.problem.problems)

    @property
    def columns(self) -> list[str]:
        """The state columns, keys first (module docstring)."""
        problem = self.problem.problems[0]
        instrument = list(INSTRUMENT_COLUMNS) if self.problem.with_options else []
        vols = [f"vol_{i}" for i in range(self.n_vols)]
        return [*KEYS, "present", "spot", "tau", *vols, *problem.context, *instrument]

    def predict(self, states: pd.DataFrame, params: Mapping[str, Any]) -> pd.DataFrame:
        """The model's positions on the windows of ``states`` (module docstring).

        Raises:
            ValueError: a column is missing, a code is not the model's, or a window lacks a row.
        """
        ep, order = self.episodes(states)
        with torch.no_grad():
            held = self.positions(self.problem, ep)
        n, steps, codes = ep.n_paths, self.problem.n_steps, len(self.problem.codes)
        hedge = torch.full((n, steps + 1, codes), float("nan"), dtype=torch.float64)
        hedge[:, :steps] = held.underlying.double()[..., None]
        out = {"hedge": hedge.reshape(-1).numpy()}
        if held.options is not None:
            option = torch.full_like(hedge, float("nan"))
            option[:, :steps] = held.options.double()
            out["option"] = option.reshape(-1).numpy()
        answer = pd.DataFrame(out)
        answer.index = states.index[order]
        return answer.loc[states.index]

    def episodes(self, states: pd.DataFrame) -> tuple[PortfolioEpisodes, np.ndarray]:
        """``states`` as the batch of windows the model reads, and the row order (window,
        step, code) in which their rows fill it."""
        pp, columns = self.problem, self.columns
        missing = [c for c in columns if c not in states.columns]
        if missing:
            raise ValueError(f"{self.name}: states lack the columns {missing}; need {columns}")
        unknown = sorted(set(states["code"]) - set(pp.codes))
        if unknown:
            raise ValueError(f"{self.name}: codes {unknown} are not the model's {list(pp.codes)}")
        code_index = states["code"].map({c: i for i, c in enumerate(pp.codes)}).to_numpy()
        order = np.lexsort((code_index, states["step"].to_numpy(), states["window"].to_numpy()))
        steps, n_codes = pp.n_steps + 1, len(pp.codes)
        rows = states.iloc[order]
        n = rows["window"].nunique()
        expected = np.tile(np.arange(n_codes), n * steps)
        if (
            len(rows) != n * steps * n_codes
            or not (code_index[order] == expected).all()
            or not (
                rows["step"].to_numpy() == np.repeat(np.tile(np.arange(steps), n), n_codes)
            ).all()
        ):
            raise ValueError(
                f"{self.name}: every window needs one row per step 0..{pp.n_steps} and code "
                f"{list(pp.codes)}; got {len(rows)} rows for {n} windows"
            )

        def grid(column: str | list[str]) -> Tensor:  # (n, steps, codes[, k])
            values = rows[column].to_numpy(dtype=np.float64)
            return torch.from_numpy(values.reshape(n, steps, n_codes, *values.shape[1:]))

        dtype = torch.float32
        spot, tau, present = grid("spot"), grid("tau"), grid("present")[:, 0]
        vols = grid([f"vol_{i}" for i in range(self.n_vols)])
        context = grid(list(pp.problems[0].context))[:, :-1]
        instrument = {c: grid(c) for c in INSTRUMENT_COLUMNS} if pp.with_options else {}
        books = tuple(
            Episodes(
                spot=spot[:, :, c].to(dtype),
                tau=tau[:, :, c].to(dtype),
                vol=vols[:, :, c, : len(problem.book.strikes)].to(dtype),
                premium=torch.zeros(n, dtype=dtype),
                terminal_value=torch.zeros(n, dtype=dtype),
                context=context[:, :, c].to(dtype),
                **{k: v[:, :, c].to(dtype) for k, v in instrument.items()},
            )
            for c, problem in enumerate(pp.problems)
        )
        return PortfolioEpisodes(spot[:, :, 0].to(dtype), present.to(dtype), books), order

    def example(self) -> pd.DataFrame:
        """One window, every code present, the spot still at the first book's first strike,
        at each code's reference vol, with no context."""
        pp = self.problem
        strike = pp.problems[0].book.strikes[0]
        rows = []
        for step in range(pp.n_steps + 1):
            for problem, code in zip(pp.problems, pp.codes, strict=True):
                k = len(problem.book.strikes)
                row = {"window": 0, "step": step, "code": code, "present": 1.0, "spot": strike}
                row["tau"] = 0.02 * (1.0 - step / (pp.n_steps + 1))
                row |= {f"vol_{i}": problem.sigma if i < k else np.nan for i in range(self.n_vols)}
                row |= dict.fromkeys(problem.context, 0.0)
                if pp.with_options:
                    row |= {"instrument_price": 1.0, "instrument_vol": problem.sigma}
                    row |= {"instrument_cost": 0.0}
                rows.append(row)
        return pd.DataFrame(rows, columns=self.columns)


def load(directory: Path) -> ServedPortfolio:
    """A registered portfolio model's folder, rebuilt around its specialists (module
    docstring); which model it is comes from its spec's type."""
    name, spec = _read_spec(directory)
    specialists, problems = [], []
    client = registry.client()
    for code in spec.codes:
        loaded = registry.load_version(client, model_name(code), spec.specialists[code])
        policy, specialist = load_policy(loaded.directory)
        specialists.append(policy)
        problems.append(specialist.problem())
    problem = PortfolioProblem(
        codes=tuple(spec.codes),
        problems=tuple(problems),
        **spec.costs.model_dump(),
        max_position=spec.max_position,
    )
    model, positions = _rebuild(spec, specialists)
    model.load_state_dict(load_weights(directory))
    model.eval()
    return ServedPortfolio(name, problem, positions, {})


def _rebuild(
    spec: shared.PortfolioModelSpec, specialists: list[nn.Module]
) -> tuple[nn.Module, Positions]:
    """The untrained skeleton the folder's weights load into, and its positions."""
    if isinstance(spec, shared.EnsembleSpec):
        info = spec.ensemble
        members = [  # each member trained its own copies of the specialists
            JointModel(spec.member_spec.meta.build(), [copy.deepcopy(p) for p in specialists])
            for _ in info.joint_versions
        ]
        ensemble = ensemble_of(members, info)

        def of_ensemble(pp: PortfolioProblem, ep: PortfolioEpisodes) -> Hedge:
            return ensemble.positions(pp, ep)[0]

        return ensemble, of_ensemble
    meta = spec.meta.build()
    if isinstance(spec, shared.JointSpec):
        joint = JointModel(meta, specialists)

        def of_joint(pp: PortfolioProblem, ep: PortfolioEpisodes) -> Hedge:
            return member_positions(pp, ep, joint)

        return joint, of_joint

    def of_meta(pp: PortfolioProblem, ep: PortfolioEpisodes) -> Hedge:
        return meta_rollout(pp, ep, proposals(pp, ep, specialists), meta).hedge

    return meta, of_meta


def _read_spec(directory: Path) -> tuple[str, shared.PortfolioModelSpec]:
    """The model's name and spec: the spec type that reads the folder (their fields differ,
    and a spec refuses fields it does not declare)."""
    errors = []
    for name, spec_type in (
        (shared.ENSEMBLE_MODEL, shared.EnsembleSpec),
        (shared.JOINT_MODEL, shared.JointSpec),
        (shared.META_MODEL, shared.MetaControllerSpec),
    ):
        try:
            return name, spec_type.read(directory)
        except ArtifactSpecError as error:
            errors.append(str(error))
    raise ArtifactSpecError("; ".join(errors))
