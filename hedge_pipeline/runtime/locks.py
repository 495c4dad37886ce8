"""An inter-process lock on a file, for one-time initialisation of shared stores.

Dagster's and MLflow's SQLite stores create and migrate their schemas on first use; several
processes starting at once on a fresh data directory race on those migrations (alembic then
fails with "expected to match one row"). Whoever holds this lock initialises; the others wait
and then find the schema in place.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
