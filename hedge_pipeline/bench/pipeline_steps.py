"""The market-data steps of every weekly code of a source, timed: the data path of
``hedge bench pipeline --data-path`` (``bench.pipeline.data_path``).

``python hedge_pipeline/bench/pipeline_steps.py OUT.json DATA_DIR [LIMIT]`` runs, for each of
the source's weekly codes in turn (the first ``LIMIT`` if given), the body of
``raw_option_chains`` (parse, validate, stage, audit, publish) and then that of
``greeks_features`` (read the raw rows, implied vols and Greeks, market features, stage,
audit, publish, hash) into a fresh warehouse in ``DATA_DIR``. The source comes from the
environment (``HEDGE_SOURCE``, ``HEDGE_HISTORY``), as for ``hedge run``. Each body is the
asset's own function (``op.compute_fn.decorated_fn``) called with a partition context and
the resources: everything a step does but Dagster's events around it, so the figure is the
data path's, and the run's overhead is measured apart (the event log of ``hedge run``).

Why a script run by path, importing only what both versions have: ``bench.pipeline`` runs
it once with ``PYTHONPATH`` at this checkout and once at an older checkout (``--before``),
so that the code before and after a change is measured by the same driver, in the same
command. Writes per code seconds (wall and this process's CPU, which counts DuckDB's and the
solver's threads) and rows, and the process's peak RSS after 1, 8, 64, ... codes: per-code
streaming shows as a peak that stops growing once the first codes are done.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(body: Any, code: str, **resources: Any) -> tuple[float, float, int]:
    """Run one asset body for ``code``: (wall s, CPU s, rows its materialization reports)."""
    import dagster as dg

    context = dg.build_asset_context(partition_key=code)
    wall, cpu = time.perf_counter(), time.process_time()
    events = list(body.op.compute_fn.decorated_fn(context, **resources))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, int(events[-1].metadata["dagster/row_count"])


def run(out: Path, data_dir: Path, limit: int | None) -> dict[str, Any]:
    """Both steps of every code (see the module docstring); the report, also written to
    ``out``."""
    import hedge_pipeline
    from hedge_pipeline.orchestration.resources import (
        ChainSourceResource,
        DataQualityResource,
        WarehouseResource,
    )
    from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains

    source = ChainSourceResource.from_env()
    warehouse = WarehouseResource(path=str(data_dir / "warehouse.duckdb"))
    policy = DataQualityResource.from_env()
    codes = list(source.build().list_codes())[:limit]
    report: dict[str, Any] = {
        "package": str(Path(hedge_pipeline.__file__).parent),
        "source": source.kind,
        "codes": len(codes),
        "peak_rss_mib_after_codes": {},
    }
    steps: dict[str, list[tuple[float, float, int]]] = {"raw": [], "greeks": []}
    checkpoints = {1, 8} | {8**k for k in range(2, 5)} | {len(codes)}
    for i, code in enumerate(codes, start=1):
        steps["raw"].append(
            _timed(raw_option_chains, code, source=source, warehouse_db=warehouse,
                   quality_policy=policy)
        )  # fmt: skip
        steps["greeks"].append(
            _timed(greeks_features, code, warehouse_db=warehouse, quality_policy=policy)
        )
        if i in checkpoints:
            report["peak_rss_mib_after_codes"][i] = _peak_rss_mib()
    for step, runs in steps.items():
        rows = sum(r for _, _, r in runs)
        wall, cpu = sum(w for w, _, _ in runs), sum(c for _, c, _ in runs)
        report[step] = {
            "rows": rows,
            "wall_s": wall,
            "cpu_s": cpu,
            "rows_per_s": rows / wall,
            "rows_per_cpu_s": rows / cpu,
            "per_code_wall_s": [w for w, _, _ in runs],
            "per_code_rows": [r for _, _, r in runs],
        }
    out.write_text(json.dumps(report), encoding="utf-8")
    return report


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__.split("\n\n")[1])
    run(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) == 4 else None)
