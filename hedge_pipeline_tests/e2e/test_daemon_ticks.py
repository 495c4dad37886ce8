"""The daemon of ``hedge ui`` ticks the automation that is on by default, and its runs succeed.

Two weekly codes are dropped before the server starts and are not partitions yet. The daemon's
first tick of ``new_weekly_codes_sensor`` must add them and launch one market-data run of the
two (adjacent partitions: one range, as a backfill cuts them), and it must succeed with each
code materialized. ``portfolio_retrain_sensor`` must tick and skip (no codes, or no
specialist yet), and ``nightly_retrain`` must be stopped, as the README says.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.e2e.dagster_ui import HEDGE, running_ui

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("dagster_ui")]

CODES = ["3CN5", "3IN5"]
REPOSITORY = {"repositoryLocationName": "hedge_pipeline", "repositoryName": "__repository__"}
SENSOR = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { status ticks(limit: 5) { status skipReason runIds } } }
  }
}
"""
SCHEDULE = """
query($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) { ... on Schedule { scheduleState { status } } }
}
"""
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _sensor(ui, name: str) -> dict:
    data = ui.client.query(SENSOR, {"selector": {**REPOSITORY, "sensorName": name}})
    return data["sensorOrError"]["sensorState"]


def _runs_of_sensor(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(
        instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "new_weekly_codes_sensor"}))
    )


def test_first_tick_adds_dropped_codes_and_their_runs_succeed(data_dir: Path, synthetic_code_frame):
    for code in CODES:
        write_drop(small_book(synthetic_code_frame), data_dir / "raw", code)
    with (
        running_ui(data_dir, {"HEDGE_SOURCE": "files"}) as ui,
        dg.DagsterInstance.get() as instance,
    ):
        deadline = time.monotonic() + 300
        runs = _runs_of_sensor(instance)
        while time.monotonic() < deadline and not (
            runs and all(r.status in TERMINAL for r in runs)
        ):
            time.sleep(2)
            runs = _runs_of_sensor(instance)
        [run] = runs
        assert (
            run.tags.get("dagster/asset_partition_range_start"),
            run.tags.get("dagster/asset_partition_range_end"),
        ) == (CODES[0], CODES[-1]), ui.log_tail()
        assert run.status == dg.DagsterRunStatus.SUCCESS, ui.log_tail()
        assert run.job_name == "market_data_job"
        assert sorted(instance.get_dynamic_partitions("weekly_code")) == CODES
        for key in ("raw_option_chains", "greeks_features"):
            assert instance.get_materialized_partitions(dg.AssetKey(key)) == set(CODES)

        new_codes = _sensor(ui, "new_weekly_codes_sensor")
        assert new_codes["status"] == "RUNNING"
        launched = [t for t in new_codes["ticks"] if t["runIds"]]
        assert sorted(launched[-1]["runIds"]) == sorted(r.run_id for r in runs)

        portfolio = _sensor(ui, "portfolio_retrain_sensor")
        assert portfolio["status"] == "RUNNING"
        assert portfolio["ticks"], "portfolio_retrain_sensor never ticked"
        # Its first tick may come before or after the new codes are partitions.
        for tick in portfolio["ticks"]:
            assert tick["status"] == "SKIPPED", tick
            assert re.search("no weekly codes yet|have no new specialist", tick["skipReason"])

        schedule = ui.client.query(
            SCHEDULE, {"selector": {**REPOSITORY, "scheduleName": "nightly_retrain"}}
        )
        assert schedule["scheduleOrError"]["scheduleState"]["status"] == "STOPPED"

        for key in ("raw_option_chains", "greeks_features"):
            records = instance.fetch_materializations(dg.AssetKey(key), limit=10).records
            assert sorted(r.partition_key for r in records) == CODES

        # hedge run beside the running daemon submits to the queue and leaves the dequeuing
        # to it (never two dequeuers on one instance).
        env = {**os.environ, "HEDGE_SOURCE": "files"}
        done = subprocess.run(
            [HEDGE, "run", "--select", "market_data", "--partition", CODES[0]],
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + ui.log_tail()
        assert "1 code in 1 run queued" in done.stdout
        assert "dequeued by the instance's daemon" in done.stdout
        [run] = instance.get_runs(dg.RunsFilter(tags={"hedge/trigger": "hedge-run"}))
        assert (run.status, run.tags["dagster/partition"]) == (
            dg.DagsterRunStatus.SUCCESS,
            CODES[0],
        )
    assert ui.stopped_cleanly, "hedge ui did not stop on SIGTERM:\n" + ui.log_tail()
