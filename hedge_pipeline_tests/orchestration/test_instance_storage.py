"""``dagster.yaml``'s instance storage on a real PostgreSQL server: with
``HEDGE_DAGSTER_POSTGRES_URL`` set, runs, event logs and schedules go to that database and no
SQLite file is written; artifacts and compute logs stay under the data directory; the password
shows up in no stored configuration, file, log or error. (Unset, the storage is SQLite under the
data directory: ``e2e/test_plain_dagster.py`` and ``e2e/test_backfill.py`` find its ``runs.db``.)
On either, a pool slot freed as a step queued for it reaches that step.

One server for the module (a cluster of its own, ``postgres_server.py``), one new database per
test. The tests share an xdist group so that the module starts one server, not one per worker.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import DagsterPostgresException

from hedge_pipeline.runtime import paths
from hedge_pipeline_tests.e2e.dagster_ui import plain_dagster_env
from hedge_pipeline_tests.orchestration.postgres_server import (
    PostgresServer,
    postgres_bin_dir,
    throwaway_postgres,
)
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgres")]

VARIABLE = "HEDGE_DAGSTER_POSTGRES_URL"
# Distinctive, so that finding it anywhere can only mean it leaked.
PASSWORD = "pg-Canary-Secret-7Hq2Zx9Wm4"
CODE = "3CN5"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    with throwaway_postgres(bin_dir, PASSWORD) as server:
        yield server


@pytest.fixture
def database(postgres: PostgresServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new database, named by ``HEDGE_DAGSTER_POSTGRES_URL`` for the test."""
    name = postgres.new_database()
    monkeypatch.setenv(VARIABLE, postgres.url(name))
    return name


def _sqlite_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.rglob("*.db"))


def _files_holding_the_password(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


@pytest.fixture(params=["sqlite", "postgres"])
def either_storage(request: pytest.FixtureRequest, data_dir: Path) -> str:
    """The instance storage ``dagster.yaml`` builds unset (SQLite) and with a database named."""
    if request.param == "postgres":
        request.getfixturevalue("database")
    return request.param


def test_a_slot_freed_as_a_step_queues_is_handed_to_it(either_storage: str):
    """The race Dagster's storage loses (``instance_storage.HandsOnFreedSlots``): the pool's one
    slot is held by run A; run B's step finds it taken; A ends and frees it, with nothing queued
    to hand it to; B's step then queues unassigned. B's next ask claims the free slot (Dagster's
    own storage answers BLOCKED for ever), and a held slot still blocks a second step."""
    pool = "duckdb_writer"
    with dg.DagsterInstance.get() as instance:
        events = instance.event_log_storage
        events.set_concurrency_slots(pool, 1)
        assert events.claim_concurrency_slot(pool, "run-a", "write").is_claimed
        assert not events.has_unassigned_slots(pool)  # what B's step sees: no slot to take
        events.free_concurrency_slots_for_run("run-a")
        events.add_pending_step(pool, "run-b", "write", should_assign=False)  # queued too late

        assert events.claim_concurrency_slot(pool, "run-b", "write").is_claimed
        blocked = events.claim_concurrency_slot(pool, "run-c", "write")
        assert not blocked.is_claimed and not blocked.is_assigned
        assert events.get_concurrency_info(pool).active_run_ids == {"run-b"}
        events.free_concurrency_slots_for_run("run-b")
        assert events.claim_concurrency_slot(pool, "run-c", "write").is_claimed


def test_the_instance_keeps_runs_event_logs_and_schedules_in_postgres(
    database: str, data_dir: Path
):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # Artifacts and compute logs stay in the data directory.
        assert Path(instance.root_directory) == data_dir / "dagster"
        # What Dagster shows (the UI's instance page) and hands to run workers (the reference)
        # names the storage class, never the URL: the worker reads the URL from its environment.
        shown = instance.info_str() + serialize_value(instance.get_ref())
        assert "DataDirStorage" in shown
        assert PASSWORD not in shown
        assert "127.0.0.1" not in shown


def test_a_run_is_recorded_in_postgres_and_in_no_sqlite_file(
    database: str, data_dir: Path, postgres: PostgresServer
):
    with dg.DagsterInstance.get() as instance:
        result = materialize_code(instance, CODE)
    assert result.success

    # A new instance, as another process would load it, finds the run, its events and the
    # dynamic partition.
    with dg.DagsterInstance.get() as instance:
        [record] = instance.get_run_records(dg.RunsFilter(run_ids=[result.run_id]))
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_dynamic_partitions("weekly_code") == [CODE]
        event = instance.get_latest_materialization_event(dg.AssetKey("greeks_features"))
        assert event is not None and event.run_id == result.run_id
        messages = " ".join(e.message for e in instance.all_logs(result.run_id))

    # In the database itself, not in a file beside the data directory.
    [(status,)] = postgres.query(
        database, f"SELECT status FROM runs WHERE run_id = '{result.run_id}'"
    )
    assert status == "SUCCESS"
    [(events,)] = postgres.query(
        database, f"SELECT count(*) FROM event_logs WHERE run_id = '{result.run_id}'"
    )
    assert events > 10
    assert _sqlite_files(data_dir) == []
    assert not (data_dir / "dagster" / "history").exists()
    assert (data_dir / "warehouse.duckdb").exists()  # the run did write where it should

    stored = postgres.query(database, "SELECT run_body FROM runs")
    stored += postgres.query(database, "SELECT event FROM event_logs")
    assert PASSWORD not in repr(stored) + messages
    assert _files_holding_the_password(data_dir) == []


@dg.op
def _worker_pid() -> int:
    return os.getpid()


@dg.job(executor_def=dg.multiprocess_executor)
def _two_processes():
    _worker_pid()


def test_a_step_in_another_process_writes_to_the_same_database(
    database: str, postgres: PostgresServer, data_dir: Path
):
    """A step of the multiprocess executor runs in a child process that rebuilds the instance
    from its reference, as a run worker does: the reference holds no URL, so the child finds
    it in the environment it inherits, and its events reach the same database."""
    with (
        dg.DagsterInstance.get() as instance,
        dg.execute_job(dg.reconstructable(_two_processes), instance=instance) as result,
    ):
        assert result.success
        assert result.output_for_node("_worker_pid") != os.getpid()
    step_events = postgres.query(
        database,
        "SELECT count(*) FROM event_logs"
        f" WHERE run_id = '{result.run_id}' AND dagster_event_type = 'STEP_SUCCESS'",
    )
    assert step_events == [(1,)]
    assert _sqlite_files(data_dir) == []


def test_dagster_definitions_validate_works_from_the_repo_root_on_postgres(
    database: str, data_dir: Path, postgres: PostgresServer
):
    """Plain Dagster, as in ``e2e/test_plain_dagster.py``, with only the URL added: the
    command loads the instance, so Dagster's tables appear in the new database."""
    env = plain_dagster_env(data_dir) | {VARIABLE: postgres.url(database)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    done = subprocess.run(
        [dagster, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=paths.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "All code locations passed validation" in output
    tables = postgres.query(
        database, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert {"runs", "event_logs", "jobs", "instance_info"} <= {name for (name,) in tables}
    assert _sqlite_files(data_dir) == []
    assert PASSWORD not in output


def test_a_refused_password_is_in_no_error_or_log(
    postgres: PostgresServer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
):
    """dagster-postgres retries and logs each failed connection, then gives up: neither its
    log lines nor the error chain the user sees may quote the URL's password."""
    wrong = "Wrong-Canary-3Kp8Vd1Nf6"
    monkeypatch.setenv(VARIABLE, postgres.url(postgres.new_database()).replace(PASSWORD, wrong))
    with caplog.at_level(logging.WARNING), pytest.raises(DagsterPostgresException) as caught:
        dg.DagsterInstance.get()
    shown = "".join(traceback.format_exception(caught.value)) + caplog.text
    assert "password authentication failed" in shown
    assert wrong not in shown
    assert PASSWORD not in shown
