"""What the instance's run records say about concurrency, for the tests of ``hedge run --jobs``
and of the daemon's queue."""

from __future__ import annotations

import dagster as dg


def most_at_once(records: list[dg.RunRecord]) -> int:
    """The largest number of runs in progress at one moment (start to end timestamps)."""
    edges = sorted(
        [(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records],
        key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
    )
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most
