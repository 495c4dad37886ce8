"""``hedge ui`` and ``hedge backfill`` against a real webserver and daemon.

Five weekly codes are partitions (file drops of a small book); one of them was materialized
before the server started. ``hedge backfill`` of three others must launch one asset backfill
through the webserver that the daemon completes (in one ranged run), and change nothing else:
no run, no materialization, no row for the other two codes.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.e2e.dagster_ui import listening_addresses, run_hedge, running_ui
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.xdist_group("dagster_ui")]

CODES = ["3CN5", "3IN5", "3MN5", "3WN5", "3XN5"]
BACKFILLED = ["3CN5", "3IN5", "3MN5"]
EARLIER = "3WN5"  # materialized before the server starts; must stay as it was
MARKET_DATA = ["raw_option_chains", "greeks_features"]
KEYS = [dg.AssetKey(a) for a in MARKET_DATA]


def _latest_ids(instance: dg.DagsterInstance) -> dict[tuple[str, str | None], int]:
    out = {}
    for key in KEYS:
        for record in instance.fetch_materializations(key, limit=1000).records:
            out.setdefault((key.to_user_string(), record.partition_key), record.storage_id)
    return out


def test_backfill_of_three_codes_through_the_webserver_changes_only_those(
    data_dir: Path, synthetic_code_frame
):
    raw = data_dir / "raw"
    book = small_book(synthetic_code_frame)
    for code in CODES:
        write_drop(book, raw, code)
    source_env = {"HEDGE_SOURCE": "files"}
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("weekly_code", CODES)
        materialize_code(instance, EARLIER, kind="files", raw_dir=raw)
        before_ids = _latest_ids(instance)
        runs_before = {r.run_id for r in instance.get_runs()}
        with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
            earlier_hash = warehouse.partition_hash(con, "greeks_features", EARLIER)

        with running_ui(data_dir, source_env) as ui:
            # hedge ui: loopback only, the instance under the data directory.
            assert listening_addresses(ui.port) == {"127.0.0.1"}
            assert (data_dir / "dagster" / "history" / "runs.db").exists()

            env = {**os.environ, "HEDGE_UI_URL": ui.url}
            refused = run_hedge("backfill", "--codes", "3CN5,NOPE", env=env)
            assert refused.returncode == 2
            assert "NOPE" in refused.stderr and "3XN5" in refused.stderr
            refused = run_hedge(
                "backfill", "--codes", "3CN5", "--assets", "portfolio_selection", env=env
            )
            assert refused.returncode == 2
            assert "not an asset partitioned by weekly code" in refused.stderr

            done = run_hedge(
                "backfill", "--codes", ",".join(BACKFILLED), "--assets", ",".join(MARKET_DATA),
                "--wait", "--timeout", "400",
                env=env, timeout=450,
            )  # fmt: skip
            print(done.stdout, done.stderr)
            assert done.returncode == 0, done.stdout + done.stderr + ui.log_tail()
            backfill_id = done.stdout.split()[1].rstrip(":")
            state = ui.client.backfill(backfill_id)
            assert state.status == "COMPLETED_SUCCESS"
            assert sorted(state.partitions) == BACKFILLED
            assert state.assets == {asset: (3, 0, 3, 0) for asset in MARKET_DATA}

        backfill_runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert {r.status for r in backfill_runs} == {dg.DagsterRunStatus.SUCCESS}
        # One run for the three (adjacent) codes: the assets' BackfillPolicy (ranges of up to
        # HEDGE_CODES_PER_RUN codes), each code still materialized on its own (changed, below).
        [run] = backfill_runs
        assert (
            run.tags["dagster/asset_partition_range_start"],
            run.tags["dagster/asset_partition_range_end"],
        ) == (BACKFILLED[0], BACKFILLED[-1])
        # Nothing else ran: the new-codes sensor found every drop already a partition.
        other_runs = {r.run_id for r in instance.get_runs()} - runs_before
        assert other_runs == {r.run_id for r in backfill_runs}

        after_ids = _latest_ids(instance)
        changed = {key for key, sid in after_ids.items() if before_ids.get(key) != sid}
        assert changed == {(a, code) for a in MARKET_DATA for code in BACKFILLED}
        with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
            stored = {
                row[0]
                for row in con.sql("SELECT DISTINCT weekly_code FROM greeks_features").fetchall()
            }
            assert stored == {*BACKFILLED, EARLIER}
            assert warehouse.partition_hash(con, "greeks_features", EARLIER) == earlier_hash
    assert ui.stopped_cleanly, "hedge ui did not stop on SIGTERM:\n" + ui.log_tail()
