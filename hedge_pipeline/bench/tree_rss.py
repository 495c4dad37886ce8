"""Run one command and measure its whole process tree: wall time, peak RSS, CPU time.

``python -m hedge_pipeline.bench.tree_rss OUT.json LOG -- COMMAND...`` runs COMMAND with its
stdout and stderr in LOG, waits for it with ``os.wait4`` and writes
``{"returncode", "wall_s", "peak_rss_mib", "cpu_s"}`` to OUT.json.

Why ``wait4`` counts the grandchildren: on Linux the usage it returns for a reaped child is
that child's own plus that of every descendant the child itself waited for (``RUSAGE_BOTH``),
and ``ru_maxrss`` of that is the largest peak RSS of any one process in the tree, not their
sum. A stage of ``hedge run`` is a Dagster process whose per-code worker processes (a process
pool, joined when it shuts down) and Pipes training children (``subprocess``, which waits;
``torchrun`` waits for its workers in turn) are all reaped by their parents, so they are in.
Only a process that is never reaped by its parent (a daemonized orphan) escapes the count.

Why a separate, lean launcher: a child that ``exec``s inherits the peak RSS of the process
that spawned it (``vfork`` shares the parent's memory until ``exec``, and the kernel keeps the
old memory's high-water mark), so measuring straight from the benchmark process, which has
imported Dagster and DuckDB, would report at least its size for every stage. Spawned from
this module, which imports only the standard library, a stage starts from the few MiB of a
bare interpreter, below anything a stage measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

USAGE = "usage: python -m hedge_pipeline.bench.tree_rss OUT.json LOG -- COMMAND..."


def measure(command: list[str], log: Path) -> dict[str, float | int]:
    """Run ``command`` (output to ``log``) and return its tree's wall time, peak RSS, CPU time."""
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024  # macOS: bytes
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "peak_rss_mib": kib / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(USAGE, file=sys.stderr)
        return 2
    result = measure(argv[3:], Path(argv[1]))
    Path(argv[0]).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
