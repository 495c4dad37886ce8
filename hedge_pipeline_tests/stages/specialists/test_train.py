"""The ``specialist`` stage run as a standalone child: configurations it must refuse, clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.specialists.artifact import model_name
from hedge_pipeline_tests.stages.conftest import write_specialist_extras

BAD_CONFIGS = [
    ({"algorithm": "sac"}, "algorithm: Input should be 'deep_hedging' or 'ppo' (got 'sac')"),
    ({"cost": -1e-3}, "cost: Input should be greater than or equal to 0 (got -0.001)"),
    ({"objective": "mean"}, "objective: Input should be 'per_state' or 'pooled' (got 'mean')"),
    ({"criterion": "var:0.1"}, "criterion: unknown criterion 'var' in 'var:0.1'"),
    ({"cosst": 1e-3}, "cosst: unknown field (got 0.001)"),
    ({"epochs": "four"}, "epochs: Input should be a valid integer"),
    ({}, "no registered model 'hedge-cnn-lstm'; registered models: none (train one first)"),
]


def _run(extras: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hedge_pipeline.training", "specialist", "--extras", str(extras)],
        cwd=paths.REPO_ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), BAD_CONFIGS)
def test_bad_configuration_fails_once_with_a_clear_message_and_registers_nothing(
    data_dir: Path, smoke_specialist_inputs, tmp_path: Path, overrides, message
):
    extras = write_specialist_extras(
        tmp_path, smoke_specialist_inputs, cnn_lstm_version=7, **overrides
    )
    proc = _run(extras)
    assert proc.returncode != 0
    failure = json.loads((tmp_path / "failure.json").read_text(encoding="utf-8"))
    assert message in failure["message"]
    client = registry.client()
    assert client.search_model_versions(f"name = '{model_name('3CN5')}'") == []


@pytest.mark.slow
def test_config_is_validated_before_any_data_is_read(data_dir: Path, tmp_path: Path):
    """An unknown key and a wrong type are both named, and the inputs (which do not exist
    here) were never opened: validation comes first."""
    missing = {"features": tmp_path / "absent.parquet", "selection": tmp_path / "absent2.parquet"}
    extras = write_specialist_extras(tmp_path, missing, cosst=1e-3, width="wide")
    proc = _run(extras)
    assert proc.returncode != 0
    message = json.loads((tmp_path / "failure.json").read_text(encoding="utf-8"))["message"]
    assert "invalid SpecialistInputs" in message
    assert "config.cosst: unknown field (got 0.001)" in message
    assert "config.width: Input should be a valid integer" in message
    assert "absent" not in message + proc.stderr
