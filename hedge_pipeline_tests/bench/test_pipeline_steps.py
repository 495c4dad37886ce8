"""The data path of ``bench.pipeline``: two checkouts side by side, each measured by the same
driver (``bench/pipeline_steps.py``) in its own process, on what the warehouse then holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from hedge_pipeline.bench.pipeline import data_path
from hedge_pipeline.runtime import paths
from hedge_pipeline.tables import warehouse

HISTORY = {"HEDGE_SOURCE": "history", "HEDGE_HISTORY": "sp500"}


@pytest.mark.slow
def test_data_path_measures_each_checkout_on_the_rows_it_wrote(tmp_path: Path):
    """This checkout twice (as ``after`` and as ``before``: the driver must import the
    package of the checkout it is given, and says which it did), on the history's first
    three codes in ranges of two (a range, then a single code): the rows it counts are the
    rows the warehouse holds, and the peak RSS is the process's, not the benchmark's."""
    report = data_path(
        before=paths.REPO_ROOT, data_dir=tmp_path, sources=(("h", HISTORY, 3),), per_run=2
    )
    assert [(r["source"], r["checkout"]) for r in report["results"]] == [
        ("h", "after"),
        ("h", "before"),
    ]
    for i, result in enumerate(report["results"]):
        assert result["package"] == str(paths.REPO_ROOT / "hedge_pipeline")
        run_dir = tmp_path / f"0-{result['checkout']}"
        with warehouse.connect(run_dir / "warehouse.duckdb", read_only=True) as con:
            held = warehouse.query(
                con, "SELECT weekly_code, count(*) AS n FROM greeks_features GROUP BY 1 ORDER BY 1"
            )
        n = held["n"].to_list()
        assert result["codes"] == 3 and result["per_run"] == 2
        assert result["greeks"]["per_run_rows"] == [n[0] + n[1], n[2]]
        greeks = result["greeks"]
        assert greeks["rows"] == held["n"].sum() == result["raw"]["rows"]
        assert greeks["rows_per_s"] == pytest.approx(greeks["rows"] / greeks["wall_s"])
        assert greeks["cpu_s"] > 0 and 0 < greeks["wall_s"] < result["process"]["wall_s"]
        peaks = result["peak_rss_mib_after_codes"]
        assert list(peaks) == ["1", "3"] and peaks["1"] <= peaks["3"]
        # The launcher's figure is the driver's own peak (Dagster, DuckDB, Polars imported).
        assert result["process"]["peak_rss_mib"] == pytest.approx(peaks["3"], abs=1)
        assert report["table"][i]["greeks_rows"] == greeks["rows"]
        floor = result["floor"]
        assert floor["rows"] == greeks["rows"] and floor["compute_features_s"] > 0
        assert floor["rows_per_s"] == pytest.approx(
            floor["rows"] / (floor["compute_features_s"] + floor["write_s"])
        )
    assert set(report["commits"]) == {"after", "before"}
