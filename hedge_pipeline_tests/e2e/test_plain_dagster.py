"""Plain Dagster, as a user who knows Dagster and not ``hedge`` runs it from the repository
root with nothing set: ``DAGSTER_HOME=$PWD dagster definitions validate`` and ``dagster dev``
load the code location, serve the eight assets and keep their state in the data directory
(``dagster.yaml``'s storage classes, ``orchestration.instance_storage``), not beside
``dagster.yaml``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline_tests.e2e.dagster_ui import plain_dagster_env, running_ui

pytestmark = pytest.mark.slow

ASSETS = {
    "raw_option_chains", "greeks_features", "portfolio_selection", "cnn_lstm_model",
    "specialist_agents", "meta_controller", "joint_model", "hedge_ensemble",
}  # fmt: skip
ASSET_NODES = "{ assetNodes { assetKey { path } } }"
# What Dagster writes beside dagster.yaml when a storage path is not the data directory's.
STRAY = ("history", "storage", "logs", "schedules", ".logs_queue")


def _strays() -> set[str]:
    return {name for name in STRAY if (paths.REPO_ROOT / name).exists()}


def test_validate_and_dagster_dev_work_from_the_repo_root_with_nothing_set(tmp_path: Path):
    data_dir = tmp_path / "data"
    before = _strays()
    dagster = str(Path(sys.executable).with_name("dagster"))
    validate = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=paths.REPO_ROOT,
        env=plain_dagster_env(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "All code locations passed validation" in validate.stdout + validate.stderr
    with running_ui(data_dir, plain=True) as ui:
        nodes = ui.client.query(ASSET_NODES)["assetNodes"]
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} == ASSETS
    # Runs, event logs and schedules live in the data directory, as under `hedge ui`.
    assert (data_dir / "dagster" / "history" / "runs.db").exists()
    assert ui.stopped_cleanly, ui.log_tail()
    assert _strays() == before
