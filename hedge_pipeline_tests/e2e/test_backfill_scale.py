"""An asset backfill of many weekly codes of a real history through the webserver and daemon.

Every weekly code of the S&P 500 history (``HEDGE_SOURCE=history HEDGE_HISTORY=sp500``, ~1,000
codes) is a partition before ``hedge ui`` starts, so the UI and the sensors carry them all;
``hedge backfill`` then backfills the market data of the first ``HEDGE_BACKFILL_CODES`` (default
6; ``all`` for the benchmark of ``benchmarks/pipeline.md``) and waits. It must complete with one
successful run per range of ``HEDGE_CODES_PER_RUN`` codes (the assets' ``BackfillPolicy``), each
code materialized on its own, the warehouse holding exactly the source's rows of each backfilled
code and nothing else, no step retried and no DuckDB lock error anywhere; the new-codes sensor
must have launched nothing.

While it runs, the largest resident memory of the server's process tree (webserver, daemon,
code servers, run workers) is sampled, and the GraphQL query of the asset page's partition bar
is timed. ``HEDGE_BACKFILL_REPORT=PATH`` writes those numbers, the sensors' tick durations and a
Chromium screenshot of the partition page beside PATH (the benchmark's record).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from hedge_pipeline.orchestration.resources import ChainSourceResource
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import Settings
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.e2e.dagster_ui import HEDGE, running_ui

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("dagster_ui")]

SOURCE = {"HEDGE_SOURCE": "history", "HEDGE_HISTORY": "sp500"}
MARKET_DATA = ["raw_option_chains", "greeks_features"]
LOCK_ERRORS = ("Could not set lock", "WarehouseLockTimeout", "database is locked")
PARTITION_BAR = """
query HedgePartitionBar($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionKeys
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions }
      }
    }
  }
}
"""
TICKS = """
query HedgeTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 50) { status timestamp endTimestamp } } }
  }
}
"""
REPOSITORY = {"repositoryLocationName": "hedge_pipeline", "repositoryName": "__repository__"}


def _tree_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the group, summed, in MB."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss in pages
    return total / 1e6


class _Sampler(threading.Thread):
    """Every ``every`` s: the tree's memory, and the partition bar's query time."""

    def __init__(self, ui, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.ui, self.every = ui, every
        self.peak_mb = 0.0
        self.query_s: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_mb = max(self.peak_mb, _tree_rss_mb(self.ui.process.pid))
            started = time.perf_counter()
            self.ui.client.query(PARTITION_BAR, {"key": {"path": ["greeks_features"]}})
            self.query_s.append(time.perf_counter() - started)
            self.stop.wait(self.every)


def _spread(seconds: list[float]) -> dict[str, float]:
    """How many, the median, the 95th percentile and the largest, in seconds."""
    ordered = sorted(seconds)

    def at(quantile: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(quantile * len(ordered)))], 2)

    return {"n": len(ordered), "median": at(0.5), "p95": at(0.95), "max": at(1.0)}


def _tick_seconds(ui, sensor: str) -> list[float]:
    data = ui.client.query(TICKS, {"selector": {**REPOSITORY, "sensorName": sensor}})
    ticks = data["sensorOrError"]["sensorState"]["ticks"]
    return [t["endTimestamp"] - t["timestamp"] for t in ticks if t["endTimestamp"]]


def _screenshot(url: str, path: Path, profile: Path) -> float:
    """The asset page's partitions view in Chromium, once its bar is drawn; seconds to load."""
    from playwright.sync_api import sync_playwright

    from hedge_pipeline_tests.e2e.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1600, "height": 1000},
        )  # fmt: skip
        page = browser.new_page()
        started = time.perf_counter()
        page.goto(url + "/assets/greeks_features?view=partitions", wait_until="networkidle")
        page.get_by_text("Partitions", exact=False).first.wait_for(timeout=120_000)
        seconds = time.perf_counter() - started
        page.screenshot(path=path)
        browser.close()
    return seconds


def _range(tags: dict[str, str]) -> tuple[str, str]:
    """A backfill run's first and last code (a range of one may carry the partition tag)."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"], tags["dagster/partition"]
    return tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]


def test_backfill_of_many_history_codes_completes_exactly(data_dir, monkeypatch, tmp_path):
    for key, value in SOURCE.items():
        monkeypatch.setenv(key, value)
    source = ChainSourceResource.from_env().build()
    codes = sorted(source.list_codes())
    wanted = os.environ.get("HEDGE_BACKFILL_CODES", "6")
    backfilled = codes if wanted == "all" else codes[: int(wanted)]
    report_path = os.environ.get("HEDGE_BACKFILL_REPORT")
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("weekly_code", codes)

    with running_ui(data_dir, SOURCE) as ui:
        sampler = _Sampler(ui)
        sampler.start()
        started = time.perf_counter()
        done = subprocess.run(
            [HEDGE, "backfill", "--codes", ",".join(backfilled), "--assets", ",".join(MARKET_DATA),
             "--wait", "--timeout", "14400"],
            env={**os.environ, "HEDGE_UI_URL": ui.url}, capture_output=True, text=True,
            timeout=15000, check=False,
        )  # fmt: skip
        wall_s = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr + ui.log_tail()
        backfill_id = done.stdout.split()[1].rstrip(":")
        state = ui.client.backfill(backfill_id)
        ticks = {
            s: _tick_seconds(ui, s) for s in ("new_weekly_codes_sensor", "portfolio_retrain_sensor")
        }
        shot = Path(report_path).with_suffix(".png") if report_path else None
        page_s = _screenshot(ui.url, shot, tmp_path / "chromium") if shot else None
    assert ui.stopped_cleanly, ui.log_tail()
    assert state.status == "COMPLETED_SUCCESS"
    n = len(backfilled)
    assert state.assets == {asset: (n, 0, n, 0) for asset in MARKET_DATA}

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert {r.tags.get("dagster/backfill") for r in runs} == {backfill_id}  # no sensor run
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        per_run = Settings.from_env().codes_per_run
        chunks = [backfilled[i : i + per_run] for i in range(0, n, per_run)]
        assert sorted(_range(r.tags) for r in runs) == [(c[0], c[-1]) for c in chunks]
        for key in MARKET_DATA:
            assert instance.get_materialized_partitions(dg.AssetKey(key)) == set(backfilled)
        retries = [
            event.message
            for run in runs
            for event in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
        ]
        assert retries == []
    logs = [ui.log_path, *(paths.dagster_dir() / "compute_logs").rglob("*")]
    lock_errors = [
        p
        for p in logs
        if p.is_file() and any(e in p.read_text(errors="replace") for e in LOCK_ERRORS)
    ]
    assert lock_errors == []
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        stored = dict(
            con.execute("SELECT weekly_code, count(*) FROM greeks_features GROUP BY 1").fetchall()
        )
        raw = dict(
            con.execute("SELECT weekly_code, count(*) FROM raw_option_chains GROUP BY 1").fetchall()
        )
    expected = {code: source.load(code).height for code in backfilled}
    assert stored == expected
    assert raw == expected

    if report_path:
        report = {
            "codes": n, "partitions": len(codes), "wall_s": round(wall_s, 1), "runs": len(runs),
            "rows": sum(stored.values()), "peak_tree_rss_mb": round(sampler.peak_mb),
            "lock_errors": len(lock_errors), "retries": len(retries),
            "partition_bar_query_s": _spread(sampler.query_s),
            "sensor_tick_s": {sensor: _spread(seconds) for sensor, seconds in ticks.items()},
            "partition_page_load_s": page_s, "screenshot": str(shot),
        }  # fmt: skip
        Path(report_path).write_text(json.dumps(report, indent=2))
