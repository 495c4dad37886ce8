"""Content-addressed training inputs handed to child processes (docs/design.md §1, §2).

A training child never opens the DuckDB file: the asset writes the rows it needs to
``data/datasets/<sha256>.parquet`` and passes the path. The name is the hash of the file's
bytes, so the same inputs give the same path (and a retry finds its checkpoints again), and a
dataset on disk is never modified in place.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import polars as pl


def export_parquet(frame: pl.DataFrame, directory: Path) -> Path:
    """Write ``frame`` as ``<sha256 of the bytes>.parquet`` under ``directory``; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, suffix=".parquet.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=False)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        target = directory / f"{digest}.parquet"
        if target.exists():
            tmp.unlink()
        else:
            os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
