"""The data-quality checks fail when the data is bad, not only pass when it is good."""

from __future__ import annotations

import polars as pl
import pytest

from hedge_pipeline.stages.market_data import quality
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline_tests.conftest import small_book


@pytest.fixture
def book(synthetic_code_frame) -> pl.DataFrame:
    return small_book(synthetic_code_frame, options=8, bars=20)


def _row(book: pl.DataFrame, i: int) -> pl.Expr:
    return pl.int_range(pl.len()) == i


def test_clean_book_passes_every_check(book):
    for outcome in (
        quality.unique_keys(book),
        quality.bid_le_ask(book),
        quality.non_negative_prices(book),
        quality.within_contract_life(book),
        quality.static_no_arbitrage(book, max_violation_rate=0.0),
    ):
        assert outcome.passed, outcome.description


def test_duplicates_crossed_negative_and_late_quotes_are_counted(book):
    assert quality.unique_keys(pl.concat([book, book.head(2)])).metadata["violations"] == 4
    crossed = book.with_columns(bid=pl.when(_row(book, 3)).then(pl.col("ask") + 1).otherwise("bid"))
    assert quality.bid_le_ask(crossed).metadata["violations"] == 1
    negative = book.with_columns(ask=pl.when(_row(book, 5)).then(-0.5).otherwise("ask"))
    assert not quality.non_negative_prices(negative).passed
    late = book.with_columns(
        ts=pl.when(_row(book, 0)).then(pl.col("expiry") + pl.duration(minutes=5)).otherwise("ts")
    )
    assert quality.within_contract_life(late).metadata["violations"] == 1


def test_static_arbitrage_blocks_above_the_rate_and_warns_below(book):
    # A call quoted far above the forward bound at one timestamp: a bounds violation.
    broken = book.with_columns(
        bid=pl.when(_row(book, 0) & (pl.col("option_type") == "C")).then(1e3).otherwise("bid"),
        ask=pl.when(_row(book, 0) & (pl.col("option_type") == "C"))
        .then(1e3 + 0.01)
        .otherwise("ask"),
    )
    strict = quality.static_no_arbitrage(broken, max_violation_rate=0.0)
    assert not strict.passed and strict.severity == "ERROR"
    assert strict.metadata["bound_violations"] >= 1
    lenient = quality.static_no_arbitrage(broken, max_violation_rate=0.5)
    assert lenient.passed and lenient.severity == "WARN"


def test_schema_drift_and_low_iv_solve_rate_fail(book):
    assert not quality.schema_matches({"strike": "VARCHAR"}, {"strike": "DOUBLE"}).passed
    features = compute_features(book)
    assert quality.iv_solve_rate(features, floor=0.5).passed
    below = features.with_columns(iv_status=pl.lit("below_intrinsic"))
    outcome = quality.iv_solve_rate(below, floor=0.5)
    assert not outcome.passed and outcome.metadata["solve_rate"] == 0.0
