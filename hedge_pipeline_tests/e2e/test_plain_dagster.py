"""Plain Dagster, as a user who knows Dagster and not ``hedge`` runs it from the repository
root with nothing set: ``DAGSTER_HOME=$PWD dagster definitions validate``, ``dg check defs``,
``dg list defs`` and ``dagster dev`` load the code location, list or serve the eight assets and
keep their state in the data directory (``dagster.yaml``'s storage classes,
``orchestration.instance_storage``), not beside ``dagster.yaml``."""

from __future__ import annotations

import json
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


def _run(data_dir: Path, command: str, *args: str) -> str:
    """A console script of the venv, from the repo root in a bare environment (the venv
    activated, as a user's shell has it); its output, after checking it succeeded."""
    env = plain_dagster_env(data_dir) | {"VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    done = subprocess.run(
        [str(Path(sys.executable).with_name(command)), *args],
        cwd=paths.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_validate_dg_and_dagster_dev_work_from_the_repo_root_with_nothing_set(tmp_path: Path):
    data_dir = tmp_path / "data"
    before = _strays()
    out = _run(data_dir, "dagster", "definitions", "validate", "-w", "workspace.yaml")
    assert "All code locations passed validation" in out
    assert "All definitions loaded successfully" in _run(data_dir, "dg", "check", "defs")
    listed = json.loads(_run(data_dir, "dg", "list", "defs", "--json"))
    assert {a["asset_key"] for a in listed["assets"]} == ASSETS
    with running_ui(data_dir, plain=True) as ui:
        nodes = ui.client.query(ASSET_NODES)["assetNodes"]
        assert {"/".join(n["assetKey"]["path"]) for n in nodes} == ASSETS
    # Runs, event logs and schedules live in the data directory, as under `hedge ui`.
    assert (data_dir / "dagster" / "history" / "runs.db").exists()
    assert ui.stopped_cleanly, ui.log_tail()
    assert _strays() == before
