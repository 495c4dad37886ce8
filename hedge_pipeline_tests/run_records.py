"""What the instance's run records say about concurrency, for the tests of ``hedge run`` on the
instance's run queue and of the daemon's queue; and what a run's events say about how a step
failed (once for good, or retried)."""

from __future__ import annotations

import dagster as dg
from dagster._core.events import DagsterEventType


def most_at_once(records: list[dg.RunRecord]) -> int:
    """The largest number of runs in progress at one moment (start to end timestamps)."""
    return most_overlapping([(r.start_time, r.end_time) for r in records])


def launched_spans(
    instance: dg.DagsterInstance, records: list[dg.RunRecord]
) -> list[tuple[float, float]]:
    """Each finished run from its launch (``RUN_STARTING``: the queue let it go) to its end.

    What the queue's ``max_concurrent_runs`` counts: a run is in progress from then, while its
    worker starts, not only from its first event (``start_time``), which on a busy machine
    may come after the previous run has ended.
    """
    spans = []
    for record in records:
        [launched] = instance.all_logs(
            record.dagster_run.run_id, of_type=DagsterEventType.RUN_STARTING
        )
        spans.append((launched.timestamp, record.end_time))
    return spans


def most_overlapping(spans: list[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` spans open at one moment.

    >>> most_overlapping([(0, 2), (1, 3), (3, 4)])
    2
    """
    edges = sorted(
        [(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def only_failure(result: dg.ExecuteInProcessResult) -> dg.DagsterEvent:
    """The run's one step failure, asserting it was final: exactly one, and no retry asked."""
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1 and not retries(result), (len(failures), len(retries(result)))
    return failures[0]


def retries(result: dg.ExecuteInProcessResult) -> list[dg.DagsterEvent]:
    """The run's retry requests (``STEP_UP_FOR_RETRY``)."""
    return [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
