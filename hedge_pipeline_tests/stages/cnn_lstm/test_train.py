"""The ``cnn_lstm`` stage run as a standalone child process, as a crash and a retry see it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hedge_pipeline.harness.checkpoint import load_checkpoint
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME, load_model
from hedge_pipeline_tests.stages.conftest import write_extras


def _child(extras: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hedge_pipeline.training", "cnn_lstm", "--extras", str(extras)],
        cwd=paths.REPO_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _report(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def _last_epoch(checkpoints: Path) -> int:
    files = list(checkpoints.glob("*/last.pt"))
    if not files:
        return 0
    try:
        return int(load_checkpoint(files[0])["epoch"])
    except Exception:  # being written right now
        return 0


@pytest.mark.slow
def test_killed_child_resumes_from_its_checkpoint_and_registers_once(
    data_dir: Path, smoke_market_state: Path, tmp_path: Path
):
    extras = write_extras(tmp_path, smoke_market_state, epochs=5, patience=10)
    checkpoints = paths.checkpoints_dir() / "cnn_lstm"
    child = _child(extras)
    deadline = time.monotonic() + 240
    while _last_epoch(checkpoints) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child.poll() is None, child.communicate()
    killed_after = _last_epoch(checkpoints)
    child.send_signal(signal.SIGKILL)
    child.wait()

    retry = _child(extras)
    out, err = retry.communicate(timeout=300)
    assert retry.returncode == 0, err
    report = _report(out)["metadata"]
    assert report["start_epoch"] == killed_after + 1
    assert f"resuming after epoch {killed_after}" in err
    assert report["epochs_run"] == 5
    client = registry.client()
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert [int(v.version) for v in versions] == [report["version"]]


@pytest.mark.slow
def test_registered_version_carries_the_design_tags_and_reloads_identically(
    data_dir: Path, smoke_market_state: Path, tmp_path: Path
):
    child = _child(write_extras(tmp_path, smoke_market_state, epochs=2))
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    report = _report(out)["metadata"]
    assert report["reloads_identically"] is True
    client = registry.client()
    version = client.get_model_version_by_alias(MODEL_NAME, registry.CANDIDATE)
    assert int(version.version) == report["version"]
    for tag in ("dagster_run_id", "dagster_asset", "data_version", "code_version", "config_hash"):
        assert version.tags[tag], tag
    assert version.tags["data_version"] == smoke_market_state.stem
    assert len(version.tags["weights_sha256"]) == 64
    loaded = registry.load_version(client, MODEL_NAME, "candidate")
    model, spec = load_model(loaded.directory)
    assert spec.horizon == 12 and spec.feature_columns
    x = torch.randn(3, spec.model.sequence_length, len(spec.feature_columns))
    again, _ = load_model(loaded.directory)
    assert torch.equal(model(x), again(x))
    run = client.get_run(version.run_id)
    assert {"train_loss", "val_loss", "test_mse_rv"} <= set(run.data.metrics)
    assert (
        Path(run.info.artifact_uri.removeprefix("file://"))
        .resolve()
        .is_relative_to(paths.mlflow_dir().resolve())
    )


def test_tampered_weights_refuse_to_load(data_dir: Path, smoke_market_state: Path, tmp_path: Path):
    child = _child(write_extras(tmp_path, smoke_market_state, epochs=1))
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    client = registry.client()
    version = client.get_model_version_by_alias(MODEL_NAME, registry.CANDIDATE)
    stored = registry.stage_folder(Path(version.source.removeprefix("file://")))
    weights = stored / registry.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(registry.TamperedArtifactError, match="refusing to load"):
        registry.load_version(client, MODEL_NAME, version.version)


def test_diverging_training_fails_clearly_and_registers_nothing(
    data_dir: Path, smoke_market_state: Path, tmp_path: Path
):
    child = _child(write_extras(tmp_path, smoke_market_state, learning_rate=1e30, epochs=2))
    child.communicate(timeout=300)
    assert child.returncode != 0
    failure = json.loads((tmp_path / "failure.json").read_text())
    assert (
        "TrainingDiverged" in failure["message"] and "nothing was registered" in failure["message"]
    )
    client = registry.client()
    assert client.search_model_versions(f"name = '{MODEL_NAME}'") == []


@pytest.mark.slow
def test_hpo_logs_trials_as_nested_runs_and_refits_the_best(
    data_dir: Path, smoke_market_state: Path, tmp_path: Path
):
    child = _child(write_extras(tmp_path, smoke_market_state, epochs=2, hpo_trials=2))
    out, err = child.communicate(timeout=400)
    assert child.returncode == 0, err
    assert "hpo: 2 trials" in err
    version = _report(out)["metadata"]["version"]
    client = registry.client()
    parent = client.get_run(client.get_model_version(MODEL_NAME, str(version)).run_id)
    assert {"best_learning_rate", "best_dropout", "best_lstm_hidden"} <= set(parent.data.params)
    trials = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 2
    assert all("learning_rate" in t.data.params for t in trials)
