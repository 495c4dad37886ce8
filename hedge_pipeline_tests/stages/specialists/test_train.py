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
from hedge_pipeline.stages.specialists.train import model_name
from hedge_pipeline_tests.stages.conftest import write_specialist_extras

BAD_CONFIGS = [
    ({"algorithm": "sac"}, "unknown algorithm 'sac'; expected one of deep_hedging, ppo"),
    ({"cost": -1e-3}, "cost must be a non-negative number, got -0.001"),
    ({"objective": "mean"}, "unknown objective 'mean'; expected one of per_state, pooled"),
    ({"criterion": "var:0.1"}, "var:0.1"),
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
