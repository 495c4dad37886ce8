"""Load (issue 7, item 3): the 8 default weekly codes backfilled through the daemon at once.

``hedge backfill`` of the market-data assets of every code of the default synthetic source
(smoke profile) against ``hedge ui``, two codes a run (``HEDGE_CODES_PER_RUN=2``, the assets'
``BackfillPolicy``): the daemon queues four ranged runs and starts four at a time
(``dagster.yaml``'s ``max_concurrent_runs``), while pool ``duckdb_writer`` lets one DuckDB
writer step run at a time. Every run must succeed with exactly the rows a sequential reference
computes from the source, four runs must really have been in progress at one moment, no event,
compute log or server log may mention a lock, and no partition may be lost.

Market data only, not the specialists: a specialist needs a portfolio selection and a trained
CNN-LSTM first, and eight smoke trainings cost minutes of CPU on two cores. The DuckDB file
lock, the thing under load here, is only ever taken by the market-data steps (the training
children never open the file).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.e2e.dagster_ui import run_hedge, running_ui
from hedge_pipeline_tests.e2e.test_backfill import MARKET_DATA
from hedge_pipeline_tests.run_records import most_at_once

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("dagster_ui")]

MAX_CONCURRENT_RUNS = 4  # dagster.yaml
# "lock" in any form but "block"/"clock" (check specs are blocking; that is no lock).
LOCK = re.compile(r"(?<![bc])lock", re.IGNORECASE)


def _reference_rows(codes: list[str]) -> dict[tuple[str, str], int]:
    """Rows per (table, code) that a sequential ingest of the source stores, computed with the
    source, the validation and the features code, without Dagster or the warehouse."""
    source = SyntheticSource()
    rows = {}
    for code in codes:
        valid = validate_chain(source.load(code), "reject").valid
        rows["raw_option_chains", code] = valid.height
        rows["greeks_features", code] = compute_features(valid).height
    return rows


def _stored_rows() -> dict[tuple[str, str], int]:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return {
            (table, code): count
            for table in MARKET_DATA
            for code, count in con.sql(
                f"SELECT weekly_code, count(*) FROM {table} GROUP BY weekly_code"
            ).fetchall()
        }


def _lock_mentions(instance: dg.DagsterInstance, run_ids: list[str], logs: list[Path]) -> list:
    """Every event of the runs (serialized whole: messages, errors, metadata) and every line
    of ``logs`` that mentions a lock."""
    assert LOCK.search("IOException: Could not set lock on file") and not LOCK.search("blocking")
    found = []
    for run_id in run_ids:
        entries = instance.all_logs(run_id)
        assert entries, f"no events for run {run_id}"
        found += [
            (run_id, entry.dagster_event_type, entry.message)
            for entry in entries
            if LOCK.search(dg.serialize_value(entry))
        ]
    for path in logs:
        found += [(str(path), line) for line in path.read_text(errors="replace").splitlines()
                  if LOCK.search(line)]  # fmt: skip
    return found


def test_eight_codes_backfilled_in_four_ranged_runs_at_once_store_exact_rows_without_lock_errors(
    data_dir: Path,
):
    codes = sorted(SyntheticSource().list_codes())
    assert len(codes) == 8
    with dg.DagsterInstance.get() as instance:
        # Partitions already: the new-codes sensor records them and launches nothing itself.
        instance.add_dynamic_partitions("weekly_code", codes)
    expected = _reference_rows(codes)

    ranges = [codes[i : i + 2] for i in range(0, len(codes), 2)]
    per_run = {"HEDGE_CODES_PER_RUN": "2"}
    with running_ui(data_dir, per_run) as ui, dg.DagsterInstance.get() as instance:
        env = {**os.environ, "HEDGE_UI_URL": ui.url}
        done = run_hedge(
            "backfill", "--codes", ",".join(codes), "--assets", ",".join(MARKET_DATA),
            "--wait", "--timeout", "400",
            env=env, timeout=450,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + ui.log_tail()
        backfill_id = done.stdout.split()[1].rstrip(":")
        state = ui.client.backfill(backfill_id)
        assert state.status == "COMPLETED_SUCCESS"
        assert sorted(state.partitions) == codes
        assert state.assets == {asset: (8, 0, 8, 0) for asset in MARKET_DATA}

        records = list(
            instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        )
        tags = [r.dagster_run.tags for r in records]
        assert sorted(
            [t["dagster/asset_partition_range_start"], t["dagster/asset_partition_range_end"]]
            for t in tags
        ) == [[r[0], r[-1]] for r in ranges]
        assert {r.dagster_run.status for r in records} == {dg.DagsterRunStatus.SUCCESS}
        # Nothing but the backfill ran (the sensor found every code a partition already).
        assert len(instance.get_runs()) == len(ranges) == MAX_CONCURRENT_RUNS
        assert most_at_once(records) == MAX_CONCURRENT_RUNS

        assert _stored_rows() == expected
        assert sorted(instance.get_dynamic_partitions("weekly_code")) == codes
        for asset in MARKET_DATA:
            materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
            assert sorted(materialized) == codes

        compute_logs = data_dir / "dagster" / "compute_logs"
        logs = [p for p in compute_logs.rglob("*") if p.is_file()]
        assert logs, f"no compute logs under {compute_logs}"
        assert not _lock_mentions(instance, [r.dagster_run.run_id for r in records], logs)
    assert ui.stopped_cleanly, "hedge ui did not stop on SIGTERM:\n" + ui.log_tail()
    assert not [line for line in ui.log_path.read_text().splitlines() if LOCK.search(line)]
