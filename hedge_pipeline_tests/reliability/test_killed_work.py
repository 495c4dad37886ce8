"""Killed work (issue 7, item 1): a training child, a run and a warehouse writer killed
mid-flight; retries and re-executions resume, nothing is left half-written.

Already proven elsewhere and not repeated here: ``fit`` resumes bit-exactly after SIGTERM and
after SIGKILL (``harness/test_trainer.py``), a checkpoint writer killed between its renames still
loads (``harness/test_checkpoint.py``), a standalone ``cnn_lstm`` child killed and started again
registers once (``stages/cnn_lstm/test_train.py``). Here: SIGTERM of ``hedge run`` then
SIGKILL of its re-execution's child (Dagster run, retry, re-execution), SIGKILL of a child's
launcher, SIGKILL of a warehouse writer before COMMIT, and (e2e) SIGKILL of the daemon.

Also runnable as ``python -m hedge_pipeline_tests.reliability.test_killed_work write CODE``:
the warehouse writer the DuckDB test kills just before its COMMIT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.definitions.reconstruct import (
    ReconstructableJob,
    ReconstructableRepository,
)

from hedge_pipeline.harness.checkpoint import load_checkpoint
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME
from hedge_pipeline.tables import warehouse as wh
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.e2e.dagster_ui import running_ui
from hedge_pipeline_tests.reliability.conftest import (
    TINY,
    alive,
    assert_versions_intact,
    last_epoch,
    live_processes,
    row_counts,
    training_children,
    wait_for,
)
from hedge_pipeline_tests.reliability.killing import ChildKiller
from hedge_pipeline_tests.stages.conftest import write_extras
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code

pytestmark = pytest.mark.slow

HEDGE = str(Path(sys.executable).with_name("hedge"))
PAUSED = "paused before COMMIT"


def _user_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.user_message]


def _mlflow_runs(name: str) -> list:
    client = registry.client()
    return client.search_runs([registry.ensure_experiment(client, name)])


def _asset_job(monkeypatch: pytest.MonkeyPatch) -> ReconstructableJob:
    """The job ``hedge run`` executes (``__ASSET_JOB``), reconstructable from the code location,
    as a re-execution from failure needs (the UI's "Re-execute from failure").

    The location is imported afresh, as a run worker would: its resources read this test's
    environment, not that of whichever test of this worker process imported it first.
    """
    monkeypatch.delitem(sys.modules, "hedge_pipeline.definitions", raising=False)
    repository = ReconstructableRepository.for_module(
        "hedge_pipeline.definitions", "defs", working_directory=str(paths.REPO_ROOT)
    )
    return repository.get_reconstructable_job("__ASSET_JOB")


def test_sigterm_ends_the_run_and_a_sigkilled_child_is_retried_both_resume_from_checkpoints(
    warehouse, monkeypatch: pytest.MonkeyPatch
):
    """The life of one ``cnn_lstm_model`` materialization, in two acts.

    1. SIGTERM of ``hedge run`` while its child trains epoch 2: Pipes forwards SIGINT, the child
       checkpoints mid-epoch and exits, the run fails (no retry), ``hedge run`` exits 1.
    2. Its re-execution from failure resumes there; SIGKILL of that child mid-epoch 3 (nothing
       can be saved) is retried by the step's RetryPolicy, which resumes after epoch 2 and
       registers the model once. Nothing else changes: one version, whole; tables as they were.
    """
    monkeypatch.setenv("HEDGE_PROFILE", "smoke")
    before = row_counts(warehouse)
    child, output, status = _signal_mid_training(
        [HEDGE, "run", "--profile", "smoke", "--select", "cnn_lstm"], signal.SIGTERM, 90
    )
    assert status == 1, output
    assert "cnn_lstm_model: FAILED" in output, output
    assert "cnn_lstm interrupted by a signal to the run; re-execute the run" in output
    assert "training interrupted by SIGINT after" in output  # the child checkpointed, said so
    assert not alive(child), f"training child {child} outlived its run"
    saved = load_checkpoint(next((paths.checkpoints_dir() / "cnn_lstm").glob("*/last.pt")))
    assert (saved["epoch"], saved["batches_done"] > 0) == (1, True), output

    with dg.DagsterInstance.get() as instance:
        [failed] = instance.get_runs()
        assert failed.status == dg.DagsterRunStatus.FAILURE
        messages = _user_messages(instance, failed.run_id)
        assert "[pipes] execution interrupted, sending SIGINT to subprocess." in messages
        assert registry.version_numbers(registry.client(), MODEL_NAME) == []

        killer = ChildKiller("cnn_lstm", [None], after_epoch=2)
        killer.start()
        result = dg.execute_job(
            _asset_job(monkeypatch),
            instance,
            run_config={"execution": {"config": {"in_process": {}}}},
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
        )
        [kill] = killer.result()
        messages = _user_messages(instance, result.run_id)
        assert result.success, messages[-5:]
        retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 1 and kill.epoch == 2  # killed with epoch 3 still to train
    starts = [m.split(" on cpu")[0] for m in messages if m.startswith("training ")]
    assert starts == [
        f"training resuming after epoch 1 and {saved['batches_done']} batches of epoch 2",
        "training resuming after epoch 2",
    ]
    [materialization] = result.asset_materializations_for_node("cnn_lstm_model")
    metadata = materialization.metadata
    assert (metadata["start_epoch"].value, metadata["epochs_run"].value) == (3, 3)
    # Registered once, by the retry, in the MLflow run its killed attempt had opened; the
    # interrupted run's MLflow run was closed as FAILED.
    assert assert_versions_intact(MODEL_NAME) == [metadata["version"].value]
    statuses = {r.info.run_id: r.info.status for r in _mlflow_runs(MODEL_NAME)}
    assert sorted(statuses.values()) == ["FAILED", "FINISHED"]
    assert statuses[metadata["mlflow_run_id"].value] == "FINISHED"
    assert row_counts(warehouse) == before


def _signal_mid_training(
    command: list[str], sig: signal.Signals, timeout: float
) -> tuple[int, str, int]:
    """Start ``command``, wait until its CNN-LSTM training child is past epoch 1, send ``sig``
    to the command and collect its output: (the child's pid, the output, the exit status)."""
    process = subprocess.Popen(
        command, cwd=paths.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        child = wait_for(
            lambda: (
                process.poll() is None
                and last_epoch("cnn_lstm") >= 1
                and training_children(process.pid)
            ),
            240,
            "a training child past epoch 1",
        )[0]
        process.send_signal(sig)
        output, _ = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return child, output, process.returncode


def test_sigkilled_launcher_stops_its_training_child_which_checkpoints(
    mlflow_client, smoke_market_state: Path, tmp_path: Path
):
    """A launcher killed outright (``hedge run``, a run worker: here a plain Python parent)
    cannot stop its child: the child must notice (it asks Linux for SIGTERM when its launcher
    dies), checkpoint where it stopped and exit, never register."""
    extras = write_extras(tmp_path, smoke_market_state, **TINY)
    stage = [sys.executable, "-m", "hedge_pipeline.training", "cnn_lstm", "--extras", str(extras)]
    launch = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]
    # The output ends at EOF: when the child, the pipe's last writer, has exited.
    child, output, _ = _signal_mid_training([*launch, *stage], signal.SIGKILL, 60)
    assert not alive(child), f"training child {child} outlived its launcher"
    # An epoch of this tiny model takes ~50 ms, so the signal lands mid-epoch or while the
    # epoch's end is being checkpointed; either way last.pt must hold where the child said.
    stopped = re.search(
        r"TrainingInterrupted: training interrupted by SIGTERM "
        r"(?:after (\d+) batches of epoch (\d+)|at the end of epoch (\d+))",
        output,
    )
    assert stopped, output
    batches, epoch, end_of = stopped.groups()
    saved = load_checkpoint(next((paths.checkpoints_dir() / "cnn_lstm").glob("*/last.pt")))
    if end_of is None:
        assert (saved["epoch"], saved["batches_done"]) == (int(epoch) - 1, int(batches))
    else:
        assert (saved["epoch"], saved["batches_done"]) == (int(end_of), 0)
    assert saved["epoch"] >= 1
    assert [r.info.status for r in _mlflow_runs(MODEL_NAME)] == ["FAILED"]
    assert registry.version_numbers(mlflow_client, MODEL_NAME) == []


def test_writer_killed_before_commit_leaves_the_tables_as_they_were(data_dir: Path, instance):
    code = "3CN5"
    assert materialize_code(instance, code).success
    tables = ("raw_option_chains", "greeks_features")
    before = _partition_hashes(code, tables)

    writer = subprocess.Popen(
        [sys.executable, "-m", "hedge_pipeline_tests.reliability.test_killed_work", "write", code],
        cwd=paths.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = writer.stdout.readline()
        assert line.startswith(PAUSED), line + writer.stderr.read()
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()
    # Inside its transaction the writer had deleted the partition and inserted half of it.
    in_transaction = dict(part.split("=") for part in line.removeprefix(PAUSED).split())
    for table in tables:
        assert int(in_transaction[table]) == int(before[table].split(":")[1]) // 2

    assert _partition_hashes(code, tables) == before
    again = materialize_code(instance, code)
    assert again.success
    assert _partition_hashes(code, tables) == before  # same source, same rows: idempotent


def _partition_hashes(code: str, tables: tuple[str, ...]) -> dict[str, str]:
    with duckdb.connect(str(paths.warehouse_path()), read_only=True) as con:
        return {t: wh.partition_hash(con, t, code) for t in tables}


class _PauseBeforeCommit:
    """A warehouse connection that, at COMMIT, says where its transaction stands and waits
    to be killed: the worst moment, every statement done and nothing committed."""

    def __init__(self, con: duckdb.DuckDBPyConnection, code: str) -> None:
        self._con = con
        self._code = code

    def execute(self, sql: str, *args: object) -> duckdb.DuckDBPyConnection:
        if sql == "COMMIT":
            counts = {
                table: self._con.execute(
                    f"SELECT count(*) FROM {table} WHERE weekly_code = ?", [self._code]
                ).fetchone()[0]
                for table in ("raw_option_chains", "greeks_features")
            }
            print(PAUSED, *(f"{t}={n}" for t, n in counts.items()), flush=True)
            time.sleep(600)
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)


def write_half(code: str) -> None:
    """Replace ``code``'s rows of both market-data tables with half of them, pausing at
    COMMIT (see ``_PauseBeforeCommit``)."""
    with wh.connect(paths.warehouse_path()) as con:
        frames = {
            t: wh.read_partition(con, t, code) for t in ("raw_option_chains", "greeks_features")
        }
        halves = {t: f.head(f.height // 2) for t, f in frames.items()}
        wh.replace_partition(_PauseBeforeCommit(con, code), code, halves)  # type: ignore[arg-type]


def _process_of(group: int, marker: str) -> int | None:
    """The live process of session/group ``group`` whose command line holds ``marker``."""
    for pid, _, process_group, command in live_processes():
        if process_group == group and marker in command:
            return pid
    return None


@pytest.mark.e2e
def test_daemon_killed_mid_run_the_run_finishes_and_the_restarted_daemon_runs_the_next(
    data_dir: Path, synthetic_code_frame
):
    """SIGKILL of the daemon while a run it launched executes.

    What happens: ``dagster dev`` sees its daemon die and shuts the webserver and the code
    server down (``hedge ui`` exits), but the run worker is a process of its own and finishes
    the run. A code dropped meanwhile is picked up by the daemon of the restarted ``hedge ui``
    (the new-codes sensor's next tick), and that run succeeds. Every partition holds exactly
    its drop's rows: none is half-written.
    """
    first, second = "3CN5", "3IN5"
    drops = {first: synthetic_code_frame, second: small_book(synthetic_code_frame)}
    write_drop(drops[first], data_dir / "raw", first)
    env = {"HEDGE_SOURCE": "files"}
    with dg.DagsterInstance.get() as instance:
        with running_ui(data_dir, env) as ui:
            run = wait_for(lambda: _sensor_run(instance, first, STARTED), 240, "run 1", 0.5)
            daemon = _process_of(ui.process.pid, "dagster._daemon run")
            assert daemon, ui.log_tail()
            os.kill(daemon, signal.SIGKILL)
            ui.process.wait(timeout=60)
            # Leaving this block waits for the group, the run worker included, to exit.
        log = ui.log_path.read_text(errors="replace")
        assert "dagster-daemon process shut down unexpectedly with return code -9" in log
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS, log

        write_drop(drops[second], data_dir / "raw", second)
        with running_ui(data_dir, env) as ui:
            nxt = wait_for(lambda: _sensor_run(instance, second, TERMINAL), 240, "run 2", 1.0)
            assert nxt.status == dg.DagsterRunStatus.SUCCESS, ui.log_tail()
        assert ui.stopped_cleanly, ui.log_tail()
    for code, drop in drops.items():
        hashes = _partition_hashes(code, ("raw_option_chains", "greeks_features"))
        assert all(h.endswith(f":{drop.height}") for h in hashes.values()), (code, hashes)


STARTED = {dg.DagsterRunStatus.STARTED}
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _sensor_run(instance: dg.DagsterInstance, code: str, statuses: set) -> dg.DagsterRun | None:
    """The new-codes sensor's run of ``code`` if its status is one of ``statuses``."""
    runs = instance.get_runs(
        dg.RunsFilter(
            tags={"dagster/sensor_name": "new_weekly_codes_sensor", "dagster/partition": code}
        )
    )
    return next((r for r in runs if r.status in statuses), None)


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write_half(sys.argv[2])
    else:
        raise SystemExit(
            "usage: python -m hedge_pipeline_tests.reliability.test_killed_work write CODE"
        )
