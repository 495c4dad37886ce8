"""The market-data steps of every weekly code of a source, timed: the data path of
``hedge bench pipeline --data-path`` (``bench.pipeline.data_path``).

``python hedge_pipeline/bench/pipeline_steps.py OUT.json DATA_DIR [--limit N] [--per-run K]``
cuts the source's weekly codes (the first ``N`` if given) into ranges of ``K`` adjacent codes,
as a backfill and ``hedge run`` cut them into runs (``BackfillPolicy.multi_run``), and runs,
for each range in turn, the body of ``raw_option_chains`` (parse, validate, stage, audit,
publish) and then that of ``greeks_features`` (read the raw rows, implied vols and Greeks,
market features, stage, audit, publish, hash) into a fresh warehouse in ``DATA_DIR``. The
source comes from the environment (``HEDGE_SOURCE``, ``HEDGE_HISTORY``), as for ``hedge
run``. Each body is the asset's own function (``op.compute_fn.decorated_fn``) called with a
context for the range (``_RangeContext``) and the resources: everything a step does but
Dagster's events around it, so the figure is the data path's, and the run's overhead is
measured apart (the event log of ``hedge run``).

Why a script run by path, importing only what both versions have: ``bench.pipeline`` runs
it once with ``PYTHONPATH`` at this checkout and once at an older checkout (``--before``),
so that the code before and after a change is measured by the same driver, on the same
ranges, in the same command. Writes per range seconds (wall and this process's CPU, which
counts DuckDB's and the solver's threads) and rows (as the warehouse then holds them,
counted outside the timing), and the process's peak RSS after the ranges that end at or
past 1, 8, 64, 256, 512, 768, ... codes: memory bounded by the range shows as a peak that
stops growing.
Then, after every range (so outside the peaks above), the floor (``_floor``): the IV solve,
Greeks and features of every row at once, and their bare write.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RangeContext:
    """What the market-data bodies read of their context, for a range of codes: its keys
    and a sink for each partition's metadata. Dagster's own direct-invocation context can
    neither list a range's keys unbound nor take per-partition metadata, and a bound call
    checks outputs a directly invoked body does not produce."""

    def __init__(self, codes: list[str]) -> None:
        import dagster as dg

        self.asset_key = dg.AssetKey("bench")
        self.partition_keys = codes
        self.has_partition_key = len(codes) == 1
        self.partition_key = codes[0] if self.has_partition_key else None
        self.metadata: dict[str | None, dict[str, Any]] = {}

    def add_asset_metadata(
        self, metadata: dict[str, Any], partition_key: str | None = None
    ) -> None:
        self.metadata.setdefault(partition_key, {}).update(metadata)


def _timed(body: Any, codes: list[str], **resources: Any) -> tuple[float, float]:
    """Run one asset body over a range of codes: (wall s, CPU s)."""
    context = _RangeContext(codes)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in body.op.compute_fn.decorated_fn(context, **resources):
        pass
    return time.perf_counter() - wall, time.process_time() - cpu


def _rows(database: Path, table: str, codes: list[str]) -> int:
    """The rows ``table`` holds for ``codes``."""
    import duckdb

    with duckdb.connect(str(database), read_only=True) as con:
        [(n,)] = con.execute(
            f"SELECT count(*) FROM {table} WHERE weekly_code IN (SELECT unnest($1))", [codes]
        ).fetchall()
    return int(n)


def run(out: Path, data_dir: Path, limit: int | None, per_run: int) -> dict[str, Any]:
    """Both steps of every range of codes (see the module docstring); the report, also
    written to ``out``."""
    import hedge_pipeline
    from hedge_pipeline.orchestration.resources import (
        ChainSourceResource,
        DataQualityResource,
        WarehouseResource,
    )
    from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains

    source = ChainSourceResource.from_env()
    database = data_dir / "warehouse.duckdb"
    warehouse = WarehouseResource(path=str(database))
    policy = DataQualityResource.from_env()
    codes = list(source.build().list_codes())[:limit]
    report: dict[str, Any] = {
        "package": str(Path(hedge_pipeline.__file__).parent),
        "source": source.kind,
        "codes": len(codes),
        "per_run": per_run,
        "peak_rss_mib_after_codes": {},
    }
    steps: dict[str, list[tuple[float, float, int]]] = {"raw": [], "greeks": []}
    checkpoints = sorted({1, 8, 64} | set(range(256, len(codes), 256)) | {len(codes)})
    for start in range(0, len(codes), per_run):
        codes_of_run = codes[start : start + per_run]
        wall, cpu = _timed(raw_option_chains, codes_of_run, source=source,
                           warehouse_db=warehouse, quality_policy=policy)  # fmt: skip
        steps["raw"].append((wall, cpu, _rows(database, "raw_option_chains", codes_of_run)))
        wall, cpu = _timed(
            greeks_features, codes_of_run, warehouse_db=warehouse, quality_policy=policy
        )
        steps["greeks"].append((wall, cpu, _rows(database, "greeks_features", codes_of_run)))
        done = start + len(codes_of_run)
        while checkpoints and checkpoints[0] <= done:
            report["peak_rss_mib_after_codes"][checkpoints.pop(0)] = _peak_rss_mib()
    for step, runs in steps.items():
        rows = sum(r for _, _, r in runs)
        wall, cpu = sum(w for w, _, _ in runs), sum(c for _, c, _ in runs)
        report[step] = {
            "rows": rows,
            "wall_s": wall,
            "cpu_s": cpu,
            "rows_per_s": rows / wall,
            "rows_per_cpu_s": rows / cpu,
            "per_run_wall_s": [w for w, _, _ in runs],
            "per_run_rows": [r for _, _, r in runs],
        }
    report["floor"] = _floor(database, data_dir / "floor.duckdb")
    out.write_text(json.dumps(report), encoding="utf-8")
    return report


def _floor(database: Path, scratch: Path) -> dict[str, float]:
    """The two parts no Greeks step can skip, on every raw row the warehouse holds as one
    frame: ``compute_features`` alone, then a bare transactional write of its result into
    the checkout's ``greeks_features`` of a scratch file (no staging, audit, lineage,
    metadata or hash). Their sum bounds a step's rate on this machine from above."""
    from hedge_pipeline.stages.market_data.features import compute_features
    from hedge_pipeline.tables import warehouse

    with warehouse.connect(database, read_only=True) as con:
        raw = warehouse.query(con, "SELECT * FROM raw_option_chains")
    started = time.perf_counter()
    features = compute_features(raw)
    compute_s = time.perf_counter() - started
    with warehouse.connect(scratch) as con:
        started = time.perf_counter()
        warehouse.replace_rows(con, {"greeks_features": features})
        write_s = time.perf_counter() - started
    scratch.unlink()
    return {
        "rows": features.height,
        "compute_features_s": compute_s,
        "write_s": write_s,
        "rows_per_s": features.height / (compute_s + write_s),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("out", type=Path)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--limit", type=int, help="the first N weekly codes only")
    parser.add_argument("--per-run", type=int, default=1, help="weekly codes per range")
    args = parser.parse_args()
    run(args.out, args.data_dir, args.limit, args.per_run)
