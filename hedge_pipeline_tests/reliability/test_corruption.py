"""Corruption (issue 7, item 2): damaged checkpoints and tampered registered weights.

``fit`` itself is proven to set a truncated, bit-flipped or checksum-less ``last.pt`` aside
with a warning (``harness/test_trainer.py``), and ``load_version`` to refuse rewritten weights
(``stages/cnn_lstm/test_train.py``). Here the damage happens between runs of the real
training child, and a tampered upstream model meets the stage that loads it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hedge_pipeline.harness.checkpoint import CheckpointError, load_checkpoint
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME
from hedge_pipeline.stages.specialists.artifact import model_name
from hedge_pipeline_tests.registry_builder import register
from hedge_pipeline_tests.reliability.conftest import (
    TINY,
    alive,
    assert_versions_intact,
    last_epoch,
    wait_for,
)
from hedge_pipeline_tests.stages.conftest import write_extras, write_specialist_extras


def _stage(stage: str, extras: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hedge_pipeline.training", stage, "--extras", str(extras)],
        cwd=paths.REPO_ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_damaged_checkpoint_is_detected_set_aside_and_training_restarts_cleanly(
    mlflow_client, smoke_market_state: Path, tmp_path: Path
):
    """Two runs killed after an epoch, their ``last.pt`` then truncated and bit-flipped; each
    next run warns, starts from scratch, and the last one registers a sound version."""
    extras = write_extras(tmp_path, smoke_market_state, **TINY)
    logs = []
    for damage in (_truncate, _flip_one_bit, None):
        child = _stage("cnn_lstm", extras)
        if damage is None:
            _, err = child.communicate(timeout=300)
            assert child.returncode == 0, err
            logs.append(err)
            break
        wait_for(lambda c=child: c.poll() is None and last_epoch("cnn_lstm"), 240, "epoch 1")
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=30)
        logs.append(err)
        assert child.returncode == -signal.SIGKILL and not alive(child.pid)
        [checkpoint] = (paths.checkpoints_dir() / "cnn_lstm").glob("*/last.pt")
        assert 1 <= load_checkpoint(checkpoint)["epoch"] < TINY["epochs"]  # killed mid-training
        damage(checkpoint)

    assert "not resuming" not in logs[0] and "training from scratch" in logs[0]
    for log in logs[1:]:
        [warning] = [line for line in log.splitlines() if line.startswith("WARNING: not resuming")]
        assert f"not resuming from {checkpoint}: {checkpoint} fails its sha256 check" in warning
        assert "truncated or corrupted; starting fresh (old checkpoints moved to" in warning
        assert "training from scratch" in log and "training resuming" not in log
    # Both damaged files were kept aside, still failing their check; the last run is whole.
    aside = sorted(checkpoint.parent.glob("unreadable-*/last.pt"))
    assert len(aside) == 2
    for path in aside:
        with pytest.raises(CheckpointError, match="fails its sha256 check"):
            load_checkpoint(path)
    assert load_checkpoint(checkpoint)["epoch"] == TINY["epochs"]
    assert len(assert_versions_intact(MODEL_NAME)) == 1


def _tamper(weights: Path, how: str) -> None:
    if how == "rewritten":
        weights.write_bytes(weights.read_bytes() + b"\0")
    else:
        weights.unlink()


@pytest.fixture
def tampered_cnn_lstm(mlflow_client, tmp_path: Path, request) -> int:
    """A registered ``hedge-cnn-lstm`` version whose weights file in the MLflow artifact store
    was then rewritten or deleted (``request.param``); returns its version number."""
    version = register(mlflow_client, tmp_path, MODEL_NAME)
    weights = Path(version.source.removeprefix("file://")) / registry.WEIGHTS_FILE
    assert weights.is_relative_to(paths.mlflow_dir())  # the store itself, not a copy
    _tamper(weights, request.param)
    return int(version.version)


@pytest.mark.parametrize("tampered_cnn_lstm", ["rewritten", "deleted"], indirect=True)
def test_tampered_registered_weights_refuse_to_load_naming_model_version_and_file(
    mlflow_client, tampered_cnn_lstm: int
):
    message = f"{MODEL_NAME} version {tampered_cnn_lstm}: {registry.WEIGHTS_FILE} "
    with pytest.raises(registry.TamperedArtifactError, match="refusing to load it") as caught:
        registry.load_version(mlflow_client, MODEL_NAME, tampered_cnn_lstm)
    assert str(caught.value).startswith(message)
    with pytest.raises(registry.TamperedArtifactError):
        registry.load_version(mlflow_client, MODEL_NAME, registry.CANDIDATE)


@pytest.mark.slow
@pytest.mark.parametrize("tampered_cnn_lstm", ["rewritten"], indirect=True)
def test_stage_built_on_a_tampered_model_fails_once_and_registers_nothing(
    mlflow_client, tampered_cnn_lstm: int, smoke_specialist_inputs, tmp_path: Path
):
    """The specialist stage loads its CNN-LSTM first: it must refuse, and say so in the failure
    file that makes the launcher fail the step without retries (a retry reads the same bytes)."""
    extras = write_specialist_extras(
        tmp_path, smoke_specialist_inputs, cnn_lstm_version=tampered_cnn_lstm
    )
    child = _stage("specialist", extras)
    _, err = child.communicate(timeout=300)
    assert child.returncode != 0
    failure = json.loads((tmp_path / "failure.json").read_text(encoding="utf-8"))
    assert failure["message"].startswith(
        f"TamperedArtifactError: {MODEL_NAME} version {tampered_cnn_lstm}: weights.pt has sha256"
    ), failure
    assert failure["message"].endswith("refusing to load it")
    assert "TamperedArtifactError" in err
    assert registry.version_numbers(mlflow_client, model_name("3CN5")) == []
