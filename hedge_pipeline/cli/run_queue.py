"""``hedge run``'s per-code runs through the instance's run queue, not beside it.

Each run is created from the code location of ``workspace.yaml`` (a code server this command
starts, as ``dagster job launch`` does) and *submitted* to the instance: its run coordinator
(``QueuedRunCoordinator``) queues it, and it is dequeued under what ``dagster.yaml`` sets
(``max_concurrent_runs``, ``tag_concurrency_limits``) and started by the instance's run launcher
(a run worker per run here; a ``K8sRunLauncher`` or a Ray launcher where the operator configures
one). Pools (``duckdb_writer``) are claimed by the runs' steps, whoever started them.

Who dequeues: the daemon of the instance when one is alive (``hedge ui``, ``dagster-daemon``);
otherwise this command runs Dagster's own ``QueuedRunCoordinatorDaemon`` iteration in its
process, under a file lock, so two ``hedge run`` at once never both dequeue (and so never start
more runs than the limit between them). It does not start ``dagster-daemon`` itself: that would
also run the sensors (``new_weekly_codes_sensor`` would add and ingest every code of the source
while the user asked for one) and the schedules, for a command that only wants its runs
started. Liveness is re-read on every pass, so a daemon that stops mid-command is taken over,
and one that starts is left to dequeue.

The command follows its runs in the instance's run storage and prints each as it ends; Ctrl-C
or SIGTERM cancels the ones not finished (queued ones leave the queue, started ones are
terminated through the launcher).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.controller import get_daemon_statuses
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from hedge_pipeline.orchestration.partitions import (
    code_ranges,
    partition_tags,
    weekly_code_partitions,
)
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.locks import file_lock

if TYPE_CHECKING:
    from dagster._core.remote_representation.code_location import CodeLocation
    from dagster._core.remote_representation.external import RemoteJob, RemoteRepository
    from dagster._core.snap import ExecutionPlanSnapshot

LOCATION = "hedge_pipeline"  # workspace.yaml's location_name
# The tag hedge run puts on its runs, with the asset it materializes: what a
# tag_concurrency_limits entry of dagster.yaml keys on (specialists: two at once on two cores).
STAGE_TAG = "hedge/stage"
# A daemon whose last heartbeat is older than this is taken for gone: it beats every 30 s, and
# Dagster's own tolerance (30 minutes) would leave this command's runs queued that long.
HEARTBEAT_GRACE_S = 60.0
POLL_S = 0.5
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class RunOutcome:
    """What the console says of one Dagster run."""

    success: bool
    run_id: str
    seconds: float
    failures: tuple[str, ...]  # "step: error message" per failed step


def daemon_dequeues(instance: dg.DagsterInstance, now: float | None = None) -> bool:
    """Whether a live daemon of this instance dequeues runs (its run-queue heartbeat is recent).

    >>> with dg.instance_for_test() as instance:
    ...     daemon_dequeues(instance)
    False
    """
    daemon = QueuedRunCoordinatorDaemon.daemon_type()
    status = get_daemon_statuses(
        instance, [daemon], curr_time_seconds=now, heartbeat_tolerance_seconds=HEARTBEAT_GRACE_S
    )[daemon]
    return bool(status.required and status.healthy)


def queue_limits(instance: dg.DagsterInstance) -> str:
    """The queue's limits as ``dagster.yaml`` sets them, for the console (``-1``: none)."""
    coordinator = instance.run_coordinator
    if not isinstance(coordinator, QueuedRunCoordinator):
        return f"{type(coordinator).__name__}: runs start as they are submitted"
    config = instance.get_concurrency_config().run_queue_config
    tags = ", ".join(
        f"{limit['key']}={limit.get('value', '*')}: {limit['limit']}"
        for limit in config.tag_concurrency_limits
    )
    return f"max_concurrent_runs {config.max_concurrent_runs}" + (
        f", tag limits {tags}" if tags else ""
    )


class RunQueue:
    """Submit runs of the code location's jobs to the instance and follow them to their end.

    Use as a context manager: entering starts the code server that the runs are created from
    and launched through (seconds: it loads the definitions); leaving stops it once the runs
    it started have ended.
    """

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._stack = ExitStack()
        self._dequeuer: QueuedRunCoordinatorDaemon | None = None
        self._plans: dict[str, ExecutionPlanSnapshot] = {}  # by job name
        self._context: WorkspaceProcessContext
        self._location: CodeLocation
        self._repository: RemoteRepository

    def __enter__(self) -> RunQueue:
        target = WorkspaceFileTarget(paths=[str(paths.REPO_ROOT / "workspace.yaml")])
        # The code server's own INFO lines (started, stopping) say nothing the user asked about.
        context = WorkspaceProcessContext(self.instance, target, code_server_log_level="WARNING")
        self._context = self._stack.enter_context(context)
        workspace = self._context.create_request_context()
        error = workspace.get_code_location_error(LOCATION)
        if error is not None:
            raise RuntimeError(f"code location {LOCATION} failed to load:\n{error.to_string()}")
        self._location = workspace.get_code_location(LOCATION)
        [self._repository] = self._location.get_repositories().values()
        if isinstance(self.instance.run_coordinator, QueuedRunCoordinator):
            interval = self.instance.run_coordinator.dequeue_interval_seconds
            self._dequeuer = self._stack.enter_context(QueuedRunCoordinatorDaemon(interval))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def submit(
        self, job_name: str, tags: Mapping[str, str], run_config: Mapping[str, object]
    ) -> str:
        """Create a run of ``job_name`` with ``tags`` and ``run_config`` and submit it; its
        run id."""
        job: RemoteJob = self._repository.get_full_job(job_name)
        if job_name not in self._plans:
            # The plan of a per-code job depends neither on the partition nor on the loggers'
            # config: made once per job, not once per code (a request to the code server each).
            plan = self._location.get_execution_plan(
                job, run_config, step_keys_to_execute=None, known_state=None, instance=self.instance
            )
            self._plans[job_name] = plan.execution_plan_snapshot
        snapshot = self._plans[job_name]
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=None,
            step_keys_to_execute=snapshot.step_keys_to_execute,
            status=None,
            tags={**job.tags, **tags},
            root_run_id=None,
            parent_run_id=None,
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            op_selection=None,
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self._repository.asset_graph,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
        )
        self.instance.submit_run(run.run_id, self._context.create_request_context())
        return run.run_id

    def _dequeue(self) -> None:
        """One pass of Dagster's queue daemon, unless a daemon of the instance is alive."""
        if self._dequeuer is None or daemon_dequeues(self.instance):
            return
        with file_lock(paths.dagster_dir() / ".dequeue.lock"):
            for _ in self._dequeuer.run_iteration(self._context):
                pass

    def codes_per_run(self, job_name: str) -> int:
        """How many weekly codes one run of ``job_name`` carries: the smallest
        ``max_partitions_per_run`` of its assets' ``BackfillPolicy`` (the market data's
        ``CODES_PER_RUN``), as a backfill of them would; 1 for assets without a multi-run
        policy (a specialist trains one code per run)."""
        limits = [
            node.backfill_policy.max_partitions_per_run
            for node in self._repository.asset_graph.asset_nodes
            if job_name in node.job_names and node.backfill_policy is not None
        ]
        # None: a single-run policy, every code in one run.
        return min((limit or sys.maxsize for limit in limits), default=1)

    def run_per_code(
        self,
        job_name: str,
        stage: str,
        codes: Sequence[str],
        label: str,
        run_config: Mapping[str, object],
    ) -> bool:
        """Submit runs of ``job_name`` over ``codes`` (each a range of up to
        ``codes_per_run`` codes adjacent in the partition order, or one code; tagged with the
        partitions and ``stage``), print each as it ends (``[i/n] <label> <codes>: ok in …``),
        and True if all succeeded. A failure does not cancel the others: each run is its own."""
        trigger = {"hedge/trigger": "hedge-run", STAGE_TAG: stage}
        order = self.instance.get_dynamic_partitions(weekly_code_partitions.name)
        by_run = {
            self.submit(job_name, {**trigger, **partition_tags(group)}, run_config): group
            for group in code_ranges(codes, order, self.codes_per_run(job_name))
        }
        who = "the instance's daemon" if daemon_dequeues(self.instance) else "this command"
        runs = len(by_run)
        print(
            f"{label}: {len(codes)} code{'s' if len(codes) > 1 else ''} in {runs} "
            f"run{'s' if runs > 1 else ''} queued ({queue_limits(self.instance)}; "
            f"dequeued by {who})",
            flush=True,
        )
        failed = []
        for i, outcome in enumerate(self.follow(list(by_run)), 1):
            group = by_run[outcome.run_id]
            if not report(f"[{i}/{runs}] {label} {named(group)}", outcome):
                failed.append(named(group))
        if failed:
            print(f"{label} failed for {', '.join(sorted(failed))}; stopping")
        return not failed

    def follow(self, run_ids: list[str]) -> Iterator[RunOutcome]:
        """Each run's outcome as it finishes, dequeuing while no daemon does; on Ctrl-C or
        SIGTERM, cancel the unfinished ones and re-raise."""
        pending = set(run_ids)
        try:
            with _sigterm_interrupts():
                while pending:
                    self._dequeue()
                    records = self.instance.get_run_records(dg.RunsFilter(run_ids=list(pending)))
                    for record in sorted(records, key=lambda r: r.end_time or 0.0):
                        if record.dagster_run.status in FINISHED:
                            pending.discard(record.dagster_run.run_id)
                            yield self._outcome(record)
                    if pending:
                        time.sleep(POLL_S)
        except KeyboardInterrupt:
            for run_id in pending:
                self.instance.run_coordinator.cancel_run(run_id)
            print(f"interrupted: {len(pending)} unfinished runs canceled", flush=True)
            raise

    def _outcome(self, record: dg.RunRecord) -> RunOutcome:
        run = record.dagster_run
        steps = [
            event.dagster_event
            for event in self.instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
            if event.dagster_event and event.dagster_event.step_failure_data.error
        ]
        failures = tuple(
            f"{step.step_key}: {step.step_failure_data.error.message.strip()}" for step in steps
        )
        if run.status != dg.DagsterRunStatus.SUCCESS and not failures:
            # A run that failed outside its steps (its worker did not start, or it was
            # canceled): the run's own failure or cancel message.
            kinds = {DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}
            failures = tuple(
                f"run: {event.message}"
                for event in self.instance.all_logs(run.run_id, of_type=kinds)
            )
        seconds = (record.end_time or 0.0) - (
            record.start_time or record.create_timestamp.timestamp()
        )
        return RunOutcome(run.status == dg.DagsterRunStatus.SUCCESS, run.run_id, seconds, failures)


def named(codes: Sequence[str]) -> str:
    """A run's codes on the console: the code, or the range's ends and size.

    >>> named(["A"]), named(["A", "B", "C"])
    ('A', 'A…C (3 codes)')
    """
    return codes[0] if len(codes) == 1 else f"{codes[0]}…{codes[-1]} ({len(codes)} codes)"


def report(label: str, outcome: RunOutcome) -> bool:
    """Print one run's end (``<label>: ok in 1.2 s (run …)``, its step failures below); whether
    it succeeded."""
    state = "ok" if outcome.success else "FAILED"
    print(f"{label}: {state} in {outcome.seconds:.1f} s (run {outcome.run_id})", flush=True)
    for failure in outcome.failures:
        print(f"    {failure}")
    return outcome.success


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` for the block (as Ctrl-C does), so that a process
    manager stopping ``hedge run`` cancels its runs instead of leaving them queued."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
