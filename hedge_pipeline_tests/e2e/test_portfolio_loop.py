"""The loop's last step live: the daemon's ``portfolio_retrain_sensor`` retrains the portfolio.

Two weekly codes get market data, a portfolio selection, a CNN-LSTM and a specialist each
through ``hedge run`` (smoke profile), and no ensemble yet: a specialist generation is due. When
``hedge ui`` starts, the sensor (on by default) must launch ``portfolio_training_job`` exactly
once for that generation, and the run must succeed and materialize ``hedge_ensemble``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.tables.schema import LINEAGE_COLUMNS
from hedge_pipeline_tests.conftest import write_drop
from hedge_pipeline_tests.e2e.dagster_ui import run_hedge, running_ui

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("dagster_ui")]

CODES = ["3CN5", "3IN5"]
ENV = {"HEDGE_SOURCE": "files", "HEDGE_PROFILE": "smoke"}
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _portfolio_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "portfolio_retrain_sensor"}))
    )


def test_a_new_specialist_generation_launches_one_portfolio_run_that_succeeds(data_dir: Path):
    source = SyntheticSource()
    for code in CODES:
        write_drop(source.load(code).drop(LINEAGE_COLUMNS), data_dir / "raw", code)
    env = {**os.environ, **paths.instance_env(data_dir), **ENV}
    for selection in ("market_data", "portfolio", "cnn_lstm", "specialists"):
        done = run_hedge("run", "--select", selection, env=env, timeout=300)
        assert done.returncode == 0, f"hedge run --select {selection}:\n{done.stdout}{done.stderr}"

    with running_ui(data_dir, ENV) as ui, dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + 300
        runs = _portfolio_runs(instance)
        while time.monotonic() < deadline and not (runs and runs[0].status in TERMINAL):
            time.sleep(2)
            runs = _portfolio_runs(instance)
        assert len(runs) == 1, ui.log_tail()
        [run] = runs
        assert run.status == dg.DagsterRunStatus.SUCCESS, ui.log_tail()
        assert run.job_name == "portfolio_training_job"
        assert run.tags["dagster/run_key"].startswith("specialists@")
        [ensemble] = instance.fetch_materializations(dg.AssetKey("hedge_ensemble"), limit=5).records
        assert ensemble.run_id == run.run_id
    assert ui.stopped_cleanly, "hedge ui did not stop on SIGTERM:\n" + ui.log_tail()
