"""``hedge run``'s per-code runs go through the instance's run queue (``cli.run_queue``).

The Show of the issue, on a 2-core machine: the limit an operator writes in ``dagster.yaml``
holds for ``hedge run`` (the runs' start and end times), and changing it changes what
``hedge run`` does. Each case is the real command in its own process, on an instance whose
``dagster.yaml`` is the repository's with only ``max_concurrent_runs`` changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType
from dagster._daemon.types import DaemonHeartbeat

from hedge_pipeline.cli.run_queue import HEARTBEAT_GRACE_S, daemon_dequeues, queue_limits
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.run_records import launched_spans, most_overlapping

CODES = ["3CN5", "3IN5", "3MN5", "3WN5"]


def _home_with_limit(home: Path, limit: int) -> Path:
    """A ``DAGSTER_HOME`` holding the repository's ``dagster.yaml`` with ``limit`` runs at once."""
    config = yaml.safe_load((paths.REPO_ROOT / "dagster.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = limit
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


@pytest.mark.slow
@pytest.mark.parametrize(("limit", "per_run"), [(1, 2), (2, 1)])
def test_hedge_run_holds_the_run_limit_of_dagster_yaml(
    data_dir, tmp_path, monkeypatch, limit, per_run
):
    """Four codes through the queue, ``per_run`` of them a run (``HEDGE_CODES_PER_RUN``, the
    market data's backfill policy): never more than ``limit`` runs launched and not yet ended
    at once, and as many as that (the queue launches the second run in the pass that launches
    the first, or the next, long before the first can end)."""
    home = _home_with_limit(tmp_path / "home", limit)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    partitions = [arg for code in CODES for arg in ("--partition", code)]
    done = subprocess.run(
        [sys.executable, "-m", "hedge_pipeline.cli.main", "run", "--select", "market_data",
         *partitions],
        env={**os.environ, "HEDGE_SOURCE": "synthetic", "HEDGE_CODES_PER_RUN": str(per_run)},
        cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    runs = len(CODES) // per_run
    assert f"4 codes in {runs} runs queued (max_concurrent_runs {limit}," in out, out
    assert "dequeued by this command" in out, out
    groups = [CODES[i : i + per_run] for i in range(0, len(CODES), per_run)]
    shown = [g[0] if per_run == 1 else f"{g[0]}…{g[-1]} ({per_run} codes)" for g in groups]
    assert all(f"market data {name}: ok" in out for name in shown), out

    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records()
        tags = [r.dagster_run.tags for r in records]
        if per_run == 1:
            assert sorted(t["dagster/partition"] for t in tags) == CODES
        else:  # ranges of adjacent codes, tagged as a backfill tags its ranged runs
            assert sorted(
                [t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"]]
                for t in tags
            ) == [[g[0], g[-1]] for g in groups]
        assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
        # Queued, then started by the launcher in a run worker: not executed in this command.
        for record in records:
            run_id = record.dagster_run.run_id
            kinds = {DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING}
            seen = {e.dagster_event.event_type for e in instance.all_logs(run_id, of_type=kinds)}
            assert seen == kinds, (run_id, seen)
            assert record.dagster_run.tags["hedge/stage"] == "market_data"
        spans = launched_spans(instance, records)
        assert most_overlapping(spans) == limit, spans
        materialized = instance.get_materialized_partitions(dg.AssetKey("greeks_features"))
        assert materialized == set(CODES)
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        counts = dict(
            con.execute("SELECT weekly_code, count(*) FROM greeks_features GROUP BY 1").fetchall()
        )
    assert counts == {code: SyntheticSource().load(code).height for code in CODES}


def test_the_console_names_the_limits_dagster_yaml_sets(instance):
    assert queue_limits(instance).startswith("max_concurrent_runs ")


def test_a_daemon_dequeues_only_while_its_heartbeat_is_recent(instance):
    """A live daemon (``hedge ui``) dequeues the command's runs; one that stopped beating a
    minute ago does not, and the command dequeues them itself rather than wait."""
    daemon = "QUEUED_RUN_COORDINATOR"
    assert not daemon_dequeues(instance)
    now = time.time()
    instance.add_daemon_heartbeat(DaemonHeartbeat(now, daemon, None, None))
    assert daemon_dequeues(instance, now + 1)
    assert not daemon_dequeues(instance, now + 30 + HEARTBEAT_GRACE_S + 1)
