"""The code location loads, in-process and through the Dagster CLI, as users load it."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from hedge_pipeline.runtime import paths


def test_definitions_are_loadable(data_dir):
    from hedge_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_option_chains", "greeks_features"} <= keys
    assert defs.resolve_job_def("market_data_job") is not None
    assert defs.resolve_sensor_def("new_weekly_codes_sensor") is not None


@pytest.mark.slow
def test_dagster_definitions_validate_passes_on_the_workspace(data_dir):
    env = {**os.environ, **paths.instance_env(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=paths.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_loading_the_code_location_does_not_import_torch_or_mlflow(data_dir):
    """The webserver and daemon load the definitions often; training libraries load in children."""
    code = (
        "import sys, hedge_pipeline.definitions; "
        "print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))"
    )
    env = {**os.environ, **paths.instance_env(data_dir)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
