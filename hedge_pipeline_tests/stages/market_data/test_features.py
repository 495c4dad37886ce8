"""``compute_features``: what the realized vol needs before it is given."""

from __future__ import annotations

import polars as pl
import pytest

from hedge_pipeline.stages.market_data.features import (
    REALIZED_VOL_MIN_BARS,
    REALIZED_VOL_MIN_DAILY_BARS,
    compute_features,
)
from hedge_pipeline.stages.market_data.sources.history import HistorySource
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource


def _first_known(features: pl.DataFrame) -> int:
    """Index of the first bar of the code with a realized vol."""
    bars = features.group_by("ts").agg(pl.col("realized_vol").first()).sort("ts")
    return int(bars["realized_vol"].is_not_null().arg_true()[0])


def test_daily_bars_give_a_realized_vol_after_a_week_of_returns() -> None:
    source = HistorySource("sp500")
    features = compute_features(source.load("SP500-2018-12-28"))  # 19 bars: two closures
    assert _first_known(features) == REALIZED_VOL_MIN_DAILY_BARS - 1 + 1  # the 5th return
    assert features["ts"].n_unique() == 19


@pytest.mark.slow
def test_intraday_bars_wait_for_an_hour_of_returns() -> None:
    source = SyntheticSource(seed=7)
    code = sorted(source.list_codes())[0]
    assert _first_known(compute_features(source.load(code))) == REALIZED_VOL_MIN_BARS
