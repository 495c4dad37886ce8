"""``hedge bench pipeline``: the stages really run, and the numbers it prints are measured.

The benchmark itself runs as users run it (``hedge bench pipeline`` in its own process) on a
tiny files-source book of two weekly codes, up to ``market_data`` (every later stage costs
another process start, and the training stages minutes even in the smoke profile: the plans
are checked as data, and the measurement of training children on a process tree of known
size). Its JSON is checked against the data directory it kept: the DuckDB table, the Dagster
event log and the drops that were written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.bench.pipeline import STAGES, measure, plans
from hedge_pipeline.cli.main import SELECTIONS
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import LINEAGE_COLUMNS
from hedge_pipeline_tests.conftest import small_book, write_drop

CODES = ("3CN5", "3IN5")  # the files source lists them sorted: 3IN5 is the one held back
ALLOCATE_MIB = 200
# A grandchild that touches ALLOCATE_MIB of memory, under a child that only waits for it.
TOUCH = f"b = bytearray({ALLOCATE_MIB} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1"
GRANDCHILD = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {TOUCH!r}])"


def test_the_full_plan_is_hedge_runs_and_the_new_code_gets_only_its_partitions():
    """The stages, in order, materialize exactly what ``hedge run --select all`` does; the
    incremental case runs the new code's partitions and the portfolio-level stages."""
    full, incremental = plans(["3CN5", "3IN5", "3MN5"], incremental=True, until=STAGES[-1])
    assert [a for stage, _ in full for a in SELECTIONS[stage]] == list(SELECTIONS["all"])
    assert full[0] == ("market_data", ["3CN5", "3IN5"])
    assert all(codes is None for _, codes in full[1:])  # later stages: every partition
    assert incremental == [
        ("market_data", ["3MN5"]),
        ("portfolio", None),
        ("specialists", ["3MN5"]),
        ("portfolio_training", None),
    ]
    full, incremental = plans(["3CN5", "3IN5"], incremental=False, until="portfolio")
    assert full == [("market_data", ["3CN5", "3IN5"]), ("portfolio", None)] and not incremental
    with pytest.raises(ValueError, match="1 weekly codes"):
        plans(["3CN5"], incremental=True, until="portfolio")


@pytest.mark.slow
def test_peak_rss_counts_a_grandchild_and_not_the_measuring_process(tmp_path: Path):
    """The training children of a stage are grandchildren of the launcher: their peak must
    count. And the pytest process measuring (hundreds of MiB) must not leak into the figure."""
    tree = measure([sys.executable, "-c", GRANDCHILD], {}, tmp_path / "tree.log")
    bare = measure([sys.executable, "-c", "pass"], {}, tmp_path / "bare.log")
    assert tree["returncode"] == 0 and bare["returncode"] == 0
    assert ALLOCATE_MIB <= tree["peak_rss_mib"] < ALLOCATE_MIB + 100
    assert 0 < bare["peak_rss_mib"] < 60
    assert tree["wall_s"] > 0 and tree["cpu_s"] > 0


@pytest.fixture
def drops(data_dir: Path) -> dict[str, int]:
    """Two small weekly codes dropped under ``data_dir/raw``; their row counts."""
    source = SyntheticSource(codes=CODES)
    rows = {}
    for code in CODES:
        book = small_book(source.load(code).drop(LINEAGE_COLUMNS), options=6, bars=300)
        write_drop(book, data_dir / "raw", code)
        rows[code] = book.height
    return rows


@pytest.mark.slow
def test_bench_pipeline_measures_every_stage_full_and_incremental(
    data_dir: Path, drops: dict[str, int], monkeypatch: pytest.MonkeyPatch
):
    env = {**os.environ, **paths.instance_env(data_dir)}
    args = ["bench", "pipeline", "--profile", "smoke", "--source", "files"]
    args += ["--data-dir", str(data_dir), "--until", "market_data"]
    done = subprocess.run(
        [sys.executable, "-m", "hedge_pipeline.cli.main", *args],
        env=env,
        cwd=paths.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["suite"] == "pipeline" and report["profile"] == "smoke"
    assert report["source"] == "files" and report["success"] is True
    assert report["command"] == "hedge " + " ".join(args)
    assert report["machine"]["cpu_count"] and report["machine"]["dagster"]
    assert report["date"].startswith("20") and report["code_version"]
    [run] = report["runs"]
    assert run["codes"] == ["3CN5"] and run["new_code"] == "3IN5"

    baseline = report["python_baseline_rss_mib"]
    assert 0 < baseline < 60
    for phase in ("full", "incremental"):
        stages = run[phase]
        assert [s["stage"] for s in stages] == ["market_data"]
        for stage in stages:
            assert stage["success"], stage
            assert stage["wall_s"] > 0
            assert 0 < stage["cpu_s"] < stage["wall_s"] * report["machine"]["cpu_count"] * 1.1
            # Every stage process imports Dagster and the definitions: far above a bare Python.
            assert stage["peak_rss_mib"] > baseline + 100
        summary = report[phase]
        assert summary["total_wall_s_median"] == pytest.approx(sum(s["wall_s"] for s in stages))
        assert [s["wall_s_median"] for s in summary["stages"]] == [s["wall_s"] for s in stages]
    assert run["incremental"][0]["command"].endswith("--partition 3IN5")

    # Greeks rows/s: rows as the table holds them, over the steps' seconds in the event log.
    run_dir = Path(run["data_dir"])
    with warehouse.connect(run_dir / "warehouse.duckdb", read_only=True) as con:
        stored = warehouse.query(
            con, "SELECT weekly_code, count(*) AS n FROM greeks_features GROUP BY 1"
        )
    table = dict(zip(stored["weekly_code"], stored["n"], strict=True))
    assert table == drops
    greeks = run["greeks_event_log"]
    assert {c: g["rows"] for c, g in greeks["per_code"].items()} == table
    for phase, codes in (("full", ["3CN5"]), ("incremental", ["3IN5"])):
        totals = greeks[phase]
        assert totals["rows"] == sum(table[c] for c in codes)
        assert 0 < totals["seconds"] < report[phase]["stages"][0]["wall_s_median"]
        assert totals["rows_per_s"] == pytest.approx(totals["rows"] / totals["seconds"])
    write_path = report["greeks"]["write_path"]
    assert write_path["rows"] == max(table.values())
    assert write_path["compute_features_s"] > 0 and write_path["duckdb_write_s"] > 0

    # The incremental case ran only the new code's market data: a run of its own, after the
    # full case's run of the first code.
    for key, value in paths.instance_env(run_dir).items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.get() as instance:
        market = instance.get_runs(dg.RunsFilter(job_name="market_data_job"))
    assert sorted(r.tags["dagster/partition"] for r in market) == sorted(CODES)
