"""The stage lifecycle on a real MLflow store, with a stage whose model is one linear layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from hedge_pipeline.harness.config import config_hash
from hedge_pipeline.harness.lifecycle import (
    ReloadMismatchError,
    StageResult,
    train_and_register,
)
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import TrackingReporter
from hedge_pipeline.registry import versions as registry

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
