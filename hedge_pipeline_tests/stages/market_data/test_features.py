"""``compute_features``: implied vols and Greeks of every row at once, and what the realized
vol needs before it is given."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.quant.implied_vol import STATUSES
from hedge_pipeline.quant.pricing import bs_greeks
from hedge_pipeline.stages.market_data.features import (
    GREEK_COLUMNS,
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


def test_unsolved_rows_get_their_status_and_null_vol_and_greeks() -> None:
    """Across two codes in one frame: a zero quote and the quotes at expiry are named, their
    vol and Greeks null (never NaN); every solved row's Greeks are the pricer's at its vol."""
    source = HistorySource("sp500")
    raw = pl.concat([source.load("SP500-2018-12-21"), source.load("SP500-2018-12-28")])
    zero = 6  # the first option's 7th bar
    raw = raw.with_row_index("i").with_columns(
        pl.when(pl.col("i") == zero).then(0.0).otherwise(pl.col(c)).alias(c) for c in ("bid", "ask")
    )
    features = compute_features(raw.drop("i")).join(raw.select("i", "weekly_code",
        "option_symbol", "ts"), on=["weekly_code", "option_symbol", "ts"]).sort("i")  # fmt: skip
    status = features["iv_status"]
    assert status[zero] == "no_quote" and set(status) <= set(STATUSES)
    assert (status == "expired").sum() == features.filter(pl.col("tau") <= 0).height > 0
    unsolved = features.filter(pl.col("iv_status") != "ok")
    assert unsolved.height > 1 and features.height - unsolved.height > 600
    for column in ("iv", *GREEK_COLUMNS):
        assert unsolved[column].null_count() == unsolved.height
        assert not features[column].is_nan().any()
    ok = features.filter(pl.col("iv_status") == "ok")
    greeks = bs_greeks(
        ok["underlying_price"].to_numpy(), ok["strike"].to_numpy(), ok["tau"].to_numpy(),
        ok["iv"].to_numpy(), ok["rate"].to_numpy(), ok["dividend_yield"].to_numpy(),
        is_call=(ok["option_type"] == "C").to_numpy(),
    )  # fmt: skip
    for column in GREEK_COLUMNS:
        np.testing.assert_array_equal(ok[column].to_numpy(), greeks[column])


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


def test_a_range_of_codes_gets_each_code_s_features_bit_for_bit() -> None:
    """The features step computes a whole range of codes at once: each code's rows are the
    ones it gets alone, to the bit, whatever order the rows come in, even when a daily
    code (a week of returns before a realized vol) shares the frame with an intraday one
    (an hour of returns)."""
    daily = HistorySource("sp500").load("SP500-2018-12-28")
    intraday = SyntheticSource(seed=7).load("3CN5").select(daily.columns)
    intraday = intraday.filter(pl.col("ts") < pl.col("ts").min() + pl.duration(days=2))
    alone = pl.concat([compute_features(intraday), compute_features(daily)])
    together = compute_features(pl.concat([daily, intraday]).sample(fraction=1.0, seed=3))
    assert together.equals(alone)
    assert _first_known(together.filter(pl.col("weekly_code") == "3CN5")) == REALIZED_VOL_MIN_BARS
    assert _first_known(together.filter(pl.col("weekly_code") != "3CN5")) == (
        REALIZED_VOL_MIN_DAILY_BARS
    )
