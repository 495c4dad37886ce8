"""``bench.ablation``: each stage across two lineages, on the same windows or not at all."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.bench.ablation import STAGES, compare, markdown


def _report_table(seed: int = 0, windows: int = 240) -> pl.DataFrame:
    """A report's P&L table: two front codes, windows in blocks of four, the baselines and
    every learned stage a little calmer than BS delta."""
    rng = np.random.default_rng(seed)
    bs_delta = rng.normal(size=windows)
    stages = {stage: 0.8 * bs_delta + 0.1 * rng.normal(size=windows) for stage in STAGES}
    return pl.DataFrame(
        {
            "front_code": ["A"] * (windows // 2) + ["B"] * (windows // 2),
            "block": [i // 4 for i in range(windows)],
            "no_hedge": rng.normal(size=windows),
            "bs_delta": bs_delta,
            "whalley_wilmott": 0.9 * bs_delta,
            **stages,
        }
    )


def test_a_lineage_against_itself_differs_by_nothing():
    table = _report_table()
    rows = compare(table, table)
    assert list(rows) == list(STAGES)
    for row in rows.values():
        assert row["difference"] == row["low"] == row["high"] == 0.0
        assert row["windows"] == 240 and row["clusters"] == 60


def test_a_stage_that_needed_the_forecast_is_worse_without_it():
    with_forecast = _report_table()
    without = with_forecast.with_columns(ensemble=pl.col("bs_delta"))
    rows = compare(with_forecast, without)
    assert rows["ensemble"]["verdict"] == "worse" and rows["ensemble"]["low"] > 0
    assert rows["joint"]["difference"] == 0.0
    text = markdown({"date": "today", "splits": {"test_replay": rows}})
    assert "| ensemble |" in text and "worse" in text


def test_lineages_on_other_windows_or_another_market_are_refused():
    table = _report_table()
    with pytest.raises(ValueError, match="tested different windows"):
        compare(table, table.head(200))
    with pytest.raises(ValueError, match="tested different windows"):
        compare(table, table.with_columns(block=pl.col("block") + 1))
    with pytest.raises(ValueError, match="bs_delta P&L differ"):
        compare(table, table.with_columns(bs_delta=pl.col("bs_delta") * 1.01))
