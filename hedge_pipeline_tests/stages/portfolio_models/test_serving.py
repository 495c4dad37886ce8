"""Registered portfolio models through MLflow's own API: ``load_model("models:/hedge-ensemble@
champion").predict(states)`` holds the ensemble's own positions on the same windows (and the
joint model's and the meta-controller's theirs)."""

from __future__ import annotations

import copy
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import ArtifactSpec, save_artifact
from hedge_pipeline.stages.portfolio_models import serving
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    MetaController,
    PortfolioProblem,
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.ensemble import HedgeEnsemble, member_positions
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes
from hedge_pipeline.stages.portfolio_models.train_ensemble import TURBULENCE_COLUMN
from hedge_pipeline.stages.specialists.artifact import Costs, load_policy, model_name
from hedge_pipeline_tests.registry.served import episodes, register_served, specialist_folder

CODES = ("3CN5", "3IN5")
COSTS = Costs(cost=1e-3, slippage=0.0, fixed_fee=0.0)
THRESHOLD = 0.5  # the turbulence column is uniform on [0, 1): the guard holds about half


def _nudged(module: nn.Module, seed: int) -> nn.Module:
    """``module`` with every parameter moved a little, so that no part is at its start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module


def _register_specialists(client, tmp_path: Path, hedge_option: bool):
    policies, problems = [], []
    for code in CODES:
        folder = specialist_folder(tmp_path / code / "model", hedge_option, code)
        register_served(client, model_name(code), folder, tmp_path)
        policy, spec = load_policy(folder)
        policies.append(policy)
        problems.append(spec.problem())
    pp = PortfolioProblem(CODES, tuple(problems), **COSTS.model_dump())
    return pp, policies


def _model(kind: str, policies: list[nn.Module]) -> tuple[nn.Module, ArtifactSpec]:
    """A portfolio model of ``kind`` over ``policies`` and the spec its stage would write."""
    torch.manual_seed(1)
    meta = _nudged(MetaController(n_context=4, width=8, n_layers=2), 2)
    common = {
        "meta": shared.MetaControllerSizes(**meta.config),
        "codes": list(CODES),
        "specialists": dict.fromkeys(CODES, 1),
        "costs": COSTS,
        "criterion": "es:0.1",
    }
    joint_spec = shared.JointSpec(
        **common, var_limit=1.0, joint=shared.JointMemberInfo(member=0, seed=0)
    )
    if kind == "meta":
        return meta, shared.MetaControllerSpec(**common, var_limit=1.0)
    if kind == "joint":
        return _nudged(JointModel(meta, [copy.deepcopy(p) for p in policies]), 3), joint_spec
    members = [
        _nudged(JointModel(copy.deepcopy(meta), [copy.deepcopy(p) for p in policies]), 4 + k)
        for k in range(2)
    ]
    weights = torch.tensor([0.7, 0.3])
    info = shared.EnsembleInfo(
        joint_versions=[1, 2],
        weights=weights.tolist(),
        validation_risk=[0.1, 0.2],
        turbulence_threshold=THRESHOLD,
        turbulence_quantile=0.9,
    )
    ensemble = HedgeEnsemble(members, weights, THRESHOLD, TURBULENCE_COLUMN)
    return ensemble, shared.EnsembleSpec(**common, ensemble=info, member_spec=joint_spec)


def _own_positions(kind: str, model: nn.Module, pp, ep, policies) -> Hedge:
    with torch.no_grad():
        if kind == "meta":
            return meta_rollout(pp, ep, proposals(pp, ep, policies), model).hedge
        if kind == "joint":
            return member_positions(pp, ep, model)
        return model.positions(pp, ep)[0]


def _windows(pp: PortfolioProblem, n: int = 6) -> PortfolioEpisodes:
    """``n`` windows on one spot path each; the second code is absent from every third."""
    spot = 110.0 * torch.exp(
        torch.cumsum(0.01 * torch.randn(n, pp.n_steps + 1, generator=torch.Generator()), 1)
    )
    books = tuple(episodes(p, n, seed=c, spot=spot) for c, p in enumerate(pp.problems))
    present = torch.ones(n, len(pp.codes))
    present[::3, 1] = 0.0
    return PortfolioEpisodes(spot, present, books)


def _states(pp: PortfolioProblem, ep: PortfolioEpisodes) -> pd.DataFrame:
    """``ep`` as state rows (``serving``'s docstring), shuffled: rows are matched by key."""
    rows = []
    for w in range(ep.n_paths):
        for step in range(pp.n_steps + 1):
            for c, (code, book) in enumerate(zip(pp.codes, ep.books, strict=True)):
                context = book.context[w, min(step, pp.n_steps - 1)].tolist()
                row = {
                    "window": w,
                    "step": step,
                    "code": code,
                    "present": float(ep.present[w, c]),
                    "spot": float(ep.spot[w, step]),
                    "tau": float(book.tau[w, step]),
                    **{f"vol_{i}": float(v) for i, v in enumerate(book.vol[w, step])},
                    **dict(zip(pp.problems[c].context, context, strict=True)),
                }
                if pp.with_options:
                    row["instrument_price"] = float(book.instrument_price[w, step])
                    row["instrument_vol"] = float(book.instrument_vol[w, step])
                    row["instrument_cost"] = float(book.instrument_cost[w, step])
                rows.append(row)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)


@pytest.mark.parametrize(
    ("kind", "hedge_option"),
    [("ensemble", False), ("ensemble", True), ("joint", True), ("meta", False)],
)
def test_the_served_model_holds_its_own_positions(
    mlflow_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, hedge_option: bool
) -> None:
    pp, policies = _register_specialists(mlflow_client, tmp_path, hedge_option)
    model, spec = _model(kind, policies)
    name = {"ensemble": shared.ENSEMBLE_MODEL, "joint": shared.JOINT_MODEL}.get(
        kind, shared.META_MODEL
    )
    folder = save_artifact(model, spec, tmp_path / "portfolio" / "model")
    register_served(mlflow_client, name, folder, tmp_path, alias=registry.CHAMPION)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri())

    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    ep = _windows(pp)
    states = _states(pp, ep)
    predicted = served.predict(states)

    own = _own_positions(kind, model.eval(), pp, ep, policies)
    decisions = states["step"] < pp.n_steps
    keys = states.loc[decisions, ["window", "step"]].to_numpy()
    expected = own.underlying[keys[:, 0], keys[:, 1]].double().numpy()
    np.testing.assert_array_equal(predicted.loc[decisions, "hedge"].to_numpy(), expected)
    assert predicted.loc[~decisions, "hedge"].isna().all()
    if hedge_option:
        codes = states.loc[decisions, "code"].map({c: i for i, c in enumerate(CODES)})
        expected = own.options[keys[:, 0], keys[:, 1], codes.to_numpy()].double().numpy()
        np.testing.assert_array_equal(predicted.loc[decisions, "option"].to_numpy(), expected)
    if kind == "ensemble":  # the turbulence guard took over somewhere, and not everywhere
        _, guard = model.positions(pp, ep)
        assert 0 < int(guard.sum()) < guard.numel()


def test_windows_missing_a_row_are_refused(mlflow_client, tmp_path: Path) -> None:
    pp, policies = _register_specialists(mlflow_client, tmp_path, False)
    model, spec = _model("meta", policies)
    served = serving.load(save_artifact(model, spec, tmp_path / "meta"))
    states = _states(pp, _windows(pp, 2)).iloc[1:]
    with pytest.raises(ValueError, match="every window needs one row per step"):
        served.predict(states, {})
