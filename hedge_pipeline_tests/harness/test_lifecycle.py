"""The stage lifecycle on a real MLflow store, with a stage whose model is one linear layer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from torch import nn

from hedge_pipeline.harness.config import config_hash
from hedge_pipeline.harness.lifecycle import (
    WORLD_SIZE_TAG,
    ReloadMismatchError,
    StageResult,
    train_and_register,
)
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter
from hedge_pipeline.registry import pyfunc
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.profiles import get_profile
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.tables.schema import LINEAGE_COLUMNS
from hedge_pipeline_tests.conftest import write_drop
from hedge_pipeline_tests.e2e.dagster_ui import run_hedge

IDENTITY = {
    "dagster_run_id": "run-1",
    "dagster_asset": "toy",
    "data_version": "d" * 16,
    "code_version": "test",
    "upstream": {"hedge-upstream": 3},
}
CFG = {"width": 2, "seed": 0}


@dataclass
class ToyStage:
    """Fits nothing: the weights are seeded; ``corrupt_on_load`` breaks the reload check."""

    registered_name: str = "hedge-toy"
    corrupt_on_load: bool = False
    fitted_at: Path | None = None

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        self.fitted_at = checkpoints
        torch.manual_seed(0)
        reporter.epoch(1, {"epoch": 1, "val_loss": 0.5})
        return nn.Linear(3, 1).eval()

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        (scratch / "report").mkdir()
        (scratch / "report" / "report.md").write_text("# toy\n", encoding="utf-8")
        figure = scratch / "figure.png"
        figure.write_bytes(b"png")
        return StageResult(
            {"test_loss": 0.25}, "test loss 0.25", {"promotion": "candidate"}, [figure]
        )

    def save(self, model: nn.Module, out: Path) -> Path:
        out.mkdir(parents=True)
        torch.save(model.state_dict(), out / registry.WEIGHTS_FILE)
        return out

    def load(self, directory: Path) -> nn.Module:
        model = nn.Linear(3, 1)
        model.load_state_dict(torch.load(directory / registry.WEIGHTS_FILE, weights_only=True))
        if self.corrupt_on_load:
            with torch.no_grad():
                model.bias.add_(1e-3)
        return model.eval()

    def probe(self, model: nn.Module) -> torch.Tensor:
        return model(torch.ones(4, 3))


def _session(rank: int = 0) -> TrainingSession:
    return TrainingSession({}, None, rank)


def test_every_step_once_in_order(mlflow_client) -> None:
    stage = ToyStage()
    done = train_and_register(_session(), mlflow_client, "toy", stage, IDENTITY, CFG)
    assert done is not None
    version = done.version
    assert (version.name, int(version.version)) == ("hedge-toy", 1)
    tags = mlflow_client.get_model_version("hedge-toy", "1").tags
    assert tags["config_hash"] == config_hash(CFG)
    assert tags["upstream.hedge-upstream"] == "3"
    assert tags["promotion"] == "candidate"
    assert len(tags["weights_sha256"]) == 64
    assert int(mlflow_client.get_model_version_by_alias("hedge-toy", "candidate").version) == 1
    run = mlflow_client.get_run(done.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_loss"] == 0.25
    assert run.data.params["width"] == "2"
    artifacts = {a.path for a in mlflow_client.list_artifacts(done.run_id)}
    assert {"figure.png", "report", "model"} <= artifacts
    assert stage.fitted_at == done.checkpoints
    assert done.checkpoints.name.startswith(f"{'d' * 16}-{config_hash(CFG)}-")


def test_a_retried_run_gets_its_version_back_with_the_new_tags(mlflow_client) -> None:
    first = train_and_register(_session(), mlflow_client, "toy", ToyStage(), IDENTITY, CFG)
    mlflow_client.set_terminated(first.run_id, status="FAILED")  # as a killed attempt leaves it
    again = train_and_register(_session(), mlflow_client, "toy", ToyStage(), IDENTITY, CFG)
    assert again.run_id == first.run_id
    assert again.version.version == first.version.version


def test_a_folder_that_does_not_reload_identically_fails_the_run(mlflow_client) -> None:
    with pytest.raises(ReloadMismatchError, match="does not reload to identical outputs"):
        train_and_register(
            _session(), mlflow_client, "toy", ToyStage(corrupt_on_load=True), IDENTITY, CFG
        )
    (run,) = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("hedge-toy").experiment_id]
    )
    assert run.info.status == "FAILED"


def test_other_ranks_train_and_register_nothing(mlflow_client) -> None:
    stage = ToyStage()
    assert train_and_register(_session(rank=1), None, "toy", stage, IDENTITY, CFG) is None
    assert stage.fitted_at is not None
    assert mlflow_client.search_registered_models() == []


@dataclass
class ServedToy:
    """The toy's ``registry.pyfunc.Served``: one output per row of three inputs."""

    model: nn.Module
    params: dict = field(default_factory=dict)

    def example(self) -> pd.DataFrame:
        return pd.DataFrame({"a": [1.0, 2.0], "b": [0.0, 1.0], "c": [3.0, -1.0]})

    def predict(self, states: pd.DataFrame, params: dict) -> pd.DataFrame:
        with torch.no_grad():
            out = self.model(torch.tensor(states[["a", "b", "c"]].to_numpy(), dtype=torch.float32))
        return pd.DataFrame({"y": out[:, 0].numpy()}, index=states.index)


def load(directory: Path) -> ServedToy:
    """This module as the toy's serving module (``registry.pyfunc.SERVING``)."""
    return ServedToy(ToyStage().load(directory))


def test_a_served_stage_registers_a_pyfunc_that_mlflow_loads(
    mlflow_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(pyfunc.SERVING, "hedge-toy", __name__)
    done = train_and_register(_session(), mlflow_client, "toy", ToyStage(), IDENTITY, CFG)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri())
    served = mlflow.pyfunc.load_model("models:/hedge-toy@candidate")
    states = pd.DataFrame({"a": [0.5], "b": [1.5], "c": [2.5]})
    with torch.no_grad():
        expected = done.model(torch.tensor([[0.5, 1.5, 2.5]]))[0, 0].item()
    assert served.predict(states)["y"].tolist() == [expected]
    loaded = registry.load_version(mlflow_client, "hedge-toy", registry.CANDIDATE)
    assert loaded.directory.name == registry.STAGE_ARTIFACT  # the stage's folder, inside


TWO_DEVICE_CODES = ("3CN5", "3IN5")
SELECTIONS = ("market_data", "portfolio", "cnn_lstm", "specialists", "portfolio_training")


@dataclass(frozen=True)
class Lineage:
    """A smoke lineage run with ``HEDGE_DEVICES=2``: its data directory and, per ``hedge run
    --select``, the exit status and the output."""

    data_dir: Path
    runs: dict[str, tuple[int, str]]

    def versions(self, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
        """Every registered version of the lineage's registry, by model."""
        for key, value in paths.instance_env(self.data_dir).items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = registry.client()
        found: dict[str, list] = {}
        for version in registry.every(client.search_model_versions):
            found.setdefault(version.name, []).append(version)
        return found

    def world_sizes(self, versions: list) -> set[str | None]:
        client = registry.client()
        return {client.get_run(v.run_id).data.tags.get(WORLD_SIZE_TAG) for v in versions}


@pytest.fixture(scope="module")
def two_device_lineage(tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    """Every ``hedge run --select`` of the smoke lineage, in order, with ``HEDGE_DEVICES=2``:
    each training stage under ``torchrun`` (2 CPU processes, gloo)."""
    data_dir = tmp_path_factory.mktemp("two-devices") / "data"
    source = SyntheticSource()
    for code in TWO_DEVICE_CODES:
        write_drop(source.load(code).drop(LINEAGE_COLUMNS), data_dir / "raw", code)
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        **paths.instance_env(data_dir),
        "HEDGE_SOURCE": "files",
        "HEDGE_PROFILE": "smoke",
        "HEDGE_DEVICES": "2",
        "OMP_NUM_THREADS": "1",
    }
    runs = {}
    for selection in SELECTIONS:
        done = run_hedge("run", "--select", selection, env=env, timeout=900)
        runs[selection] = (done.returncode, done.stdout[-4000:] + done.stderr[-8000:])
    return Lineage(data_dir, runs)


@pytest.mark.slow
@pytest.mark.xdist_group("two_devices")  # one worker trains the fixture's lineage
def test_two_devices_register_one_version_per_model_up_to_the_meta_controller(
    two_device_lineage: Lineage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 alone registers: one version of the CNN-LSTM, of each specialist and of the
    meta-controller, each trained by 2 processes."""
    for selection in SELECTIONS[:-1]:
        code, output = two_device_lineage.runs[selection]
        assert code == 0, f"hedge run --select {selection}:\n{output}"
    found = two_device_lineage.versions(monkeypatch)
    models = ["hedge-cnn-lstm", *(f"hedge-specialist-{c}" for c in TWO_DEVICE_CODES)]
    for name in [*models, "hedge-meta-controller"]:
        assert len(found.get(name, [])) == 1, f"{name}: {len(found.get(name, []))} versions"
        assert two_device_lineage.world_sizes(found[name]) == {"2"}, name


@pytest.mark.slow
@pytest.mark.xdist_group("two_devices")  # one worker trains the fixture's lineage
def test_two_devices_register_the_joint_members_and_one_ensemble(
    two_device_lineage: Lineage, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = two_device_lineage.runs["portfolio_training"]
    assert code == 0, f"hedge run --select portfolio_training:\n{output}"
    found = two_device_lineage.versions(monkeypatch)
    expected = {"hedge-joint": get_profile("smoke").portfolio.members, "hedge-ensemble": 1}
    for name, count in expected.items():
        assert len(found.get(name, [])) == count, f"{name}: {len(found.get(name, []))} versions"
        assert two_device_lineage.world_sizes(found[name]) == {"2"}, name
