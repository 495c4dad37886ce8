"""A registered specialist through MLflow's own API: ``load_model("models:/…").predict(states)``
holds the positions of the stage's own rollout on the same states."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from hedge_pipeline.hedging.simulator import Episodes, HedgingProblem, market_features, rollout
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.specialists import serving
from hedge_pipeline.stages.specialists.artifact import load_policy, model_name
from hedge_pipeline_tests.registry.served import (
    CODE,
    episodes,
    register_served,
    specialist_folder,
)


def states_of(problem: HedgingProblem, ep: Episodes, held: torch.Tensor) -> pd.DataFrame:
    """Every decision of ``ep`` as a state row: the market columns and the position the
    rollout held coming into it."""
    n, steps = ep.n_paths, problem.n_steps
    held = held.reshape(n, steps, problem.n_instruments)
    prev = torch.cat([torch.zeros_like(held[:, :1]), held[:, :-1]], dim=1)
    rows = torch.cat([market_features(problem, ep), prev], dim=-1).reshape(n * steps, -1)
    return pd.DataFrame(rows.double().numpy(), columns=list(problem.observations))


@pytest.mark.parametrize("hedge_option", [False, True], ids=["delta", "delta_gamma"])
def test_the_champion_served_by_mlflow_holds_the_rollouts_positions(
    mlflow_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hedge_option: bool
) -> None:
    folder = specialist_folder(tmp_path / "stage" / "model", hedge_option)
    register_served(mlflow_client, model_name(CODE), folder, tmp_path, alias=registry.CHAMPION)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri())

    served = mlflow.pyfunc.load_model(f"models:/{model_name(CODE)}@champion")
    policy, spec = load_policy(folder)
    problem = spec.problem()
    ep = episodes(problem)
    with torch.no_grad():
        _, held = rollout(problem, ep, policy)
    predicted = served.predict(states_of(problem, ep, held))

    expected = held.reshape(ep.n_paths * problem.n_steps, problem.n_instruments)
    assert list(predicted.columns) == ["hedge", "option"][: problem.n_instruments]
    torch.testing.assert_close(torch.tensor(predicted.to_numpy()), expected, rtol=0, atol=0)
    # The version documents itself: its signature lists the observation columns it reads.
    signature = served.metadata.signature
    assert signature.inputs.input_names() == list(problem.observations)
    assert served.input_example is not None


def test_states_without_a_column_the_policy_reads_are_refused_by_name(tmp_path: Path) -> None:
    served = serving.load(specialist_folder(tmp_path / "model"))
    states = served.example().drop(columns=["turbulence"])
    with pytest.raises(ValueError, match=r"hedge-specialist-3CN5: states lack .*'turbulence'"):
        served.predict(states, {})
