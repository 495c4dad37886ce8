"""The data-quality checks fail when the data is bad, not only pass when it is good."""

from __future__ import annotations

import polars as pl
import pytest

from hedge_pipeline.stages.market_data import quality
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import DUCKDB_TYPES, RAW_SCHEMA
from hedge_pipeline_tests.conftest import small_book


@pytest.fixture
def book(synthetic_code_frame) -> pl.DataFrame:
    return small_book(synthetic_code_frame, options=8, bars=20)


def _row(book: pl.DataFrame, i: int) -> pl.Expr:
    return pl.int_range(pl.len()) == i


def _only(outcomes: dict[str, quality.CheckOutcome]) -> quality.CheckOutcome:
    """The outcome of a check run on one weekly code's rows."""
    [outcome] = outcomes.values()
    return outcome


def test_clean_book_passes_every_check(book):
    for outcomes in (
        quality.unique_keys(book),
        quality.bid_le_ask(book),
        quality.non_negative_prices(book),
        quality.within_contract_life(book),
        quality.static_no_arbitrage(book, max_violation_rate=0.0),
    ):
        assert list(outcomes) == ["3CN5"]
        assert _only(outcomes).passed, _only(outcomes).description


def test_duplicates_crossed_negative_and_late_quotes_are_counted(book):
    assert _only(quality.unique_keys(pl.concat([book, book.head(2)]))).metadata["violations"] == 4
    crossed = book.with_columns(bid=pl.when(_row(book, 3)).then(pl.col("ask") + 1).otherwise("bid"))
    assert _only(quality.bid_le_ask(crossed)).metadata["violations"] == 1
    negative = book.with_columns(ask=pl.when(_row(book, 5)).then(-0.5).otherwise("ask"))
    assert not _only(quality.non_negative_prices(negative)).passed
    late = book.with_columns(
        ts=pl.when(_row(book, 0)).then(pl.col("expiry") + pl.duration(minutes=5)).otherwise("ts")
    )
    assert _only(quality.within_contract_life(late)).metadata["violations"] == 1


def test_static_arbitrage_blocks_above_the_rate_and_warns_below(book):
    # A call quoted far above the forward bound at one timestamp: a bounds violation.
    broken = book.with_columns(
        bid=pl.when(_row(book, 0) & (pl.col("option_type") == "C")).then(1e3).otherwise("bid"),
        ask=pl.when(_row(book, 0) & (pl.col("option_type") == "C"))
        .then(1e3 + 0.01)
        .otherwise("ask"),
    )
    strict = _only(quality.static_no_arbitrage(broken, max_violation_rate=0.0))
    assert not strict.passed and strict.severity == "ERROR"
    assert strict.metadata["bound_violations"] >= 1
    lenient = _only(quality.static_no_arbitrage(broken, max_violation_rate=0.5))
    assert lenient.passed and lenient.severity == "WARN"


def test_a_range_is_audited_code_by_code_in_one_pass(book):
    """Two codes' rows in one frame, as a ranged run stages them: each code is judged on its
    own rows (the second's broken quotes and its rate fail it alone, and it names only its own
    offenders), and a code named without rows passes every row check."""
    calls = pl.col("option_type") == "C"
    broken = book.with_columns(
        weekly_code=pl.lit("X2"),
        bid=pl.when(calls).then(1e3).otherwise("bid"),
        ask=pl.when(calls).then(1e3 + 0.01).otherwise("ask"),
    )
    types = {column: DUCKDB_TYPES[dtype] for column, dtype in RAW_SCHEMA.items()}
    alone = quality.audit_raw(book, types, 0.01)
    both = quality.audit_raw(pl.concat([book, broken]), types, 0.01, ["3CN5", "X2", "EMPTY"])
    assert list(both) == ["3CN5", "X2", "EMPTY"]
    assert both["3CN5"] == alone["3CN5"] and quality.all_passed(both["3CN5"])
    arbitrage = both["X2"]["static_no_arbitrage"]
    assert not arbitrage.passed
    assert arbitrage.metadata["bound_violations"] == broken.filter(calls).height
    assert all(e.location.file.startswith("X2 ") for e in arbitrage.worst)
    assert quality.all_passed(both["EMPTY"])
    assert both["EMPTY"]["static_no_arbitrage"].metadata["violation_rate"] == 0.0


def test_schema_drift_and_low_iv_solve_rate_fail(book):
    drift = quality.schema_matches({"strike": "VARCHAR"}, {"strike": "DOUBLE"}, table="t")
    assert not drift.passed
    features = compute_features(book)
    [(code, alone)] = quality.iv_solve_rates(features, floor=0.5).items()
    assert alone.passed
    # The same rows again as a second code whose vols did not solve, in one frame: each code
    # is judged on its own rows, not on the frame's rate (50 %, at the floor).
    below = features.with_columns(weekly_code=pl.lit("X2"), iv_status=pl.lit("below_intrinsic"))
    outcomes = quality.iv_solve_rates(pl.concat([features, below]), floor=0.5)
    assert outcomes[code] == alone
    assert not outcomes["X2"].passed and outcomes["X2"].metadata["solve_rate"] == 0.0
    assert outcomes["X2"].metadata["quoted_rows"] == features.height


def _with_lineage(frame: pl.DataFrame, file: str = "X1/chain.csv") -> pl.DataFrame:
    return frame.with_columns(source_file=pl.lit(file), source_row=pl.int_range(1, pl.len() + 1))


def test_offenders_are_named_by_file_row_and_column_worst_first(book):
    # Two calls above their bound, one by far more: it comes first, and the count of the rest
    # goes with the last one named.
    calls = _with_lineage(book.filter(pl.col("option_type") == "C").head(3))
    above = pl.col("underlying_price") + pl.col("source_row").replace_strict({1: 1e3, 3: 500.0})
    stale = calls.with_columns(
        bid=pl.when(pl.col("source_row") != 2).then(above).otherwise("bid"),
        ask=pl.when(pl.col("source_row") != 2).then(above + 0.01).otherwise("ask"),
    )
    outcome = _only(quality.static_no_arbitrage(stale, max_violation_rate=0.0))
    assert [str(e.location) for e in outcome.worst] == [
        "X1/chain.csv, row 1, column 'bid'",
        "X1/chain.csv, row 3, column 'bid'",
    ]
    assert outcome.metadata["worst_offenders"] == [str(e) for e in outcome.worst]
    assert str(outcome.worst[0]).startswith("X1/chain.csv, row 1, column 'bid': bid ")


def test_more_offenders_than_shown_are_counted_on_the_last_line(book):
    crossed = _with_lineage(book.with_columns(bid=pl.col("ask") + 1))
    outcome = _only(quality.bid_le_ask(crossed))
    assert len(outcome.worst) == quality.WORST_SHOWN
    assert [e.location.row for e in outcome.worst] == [1, 2, 3]
    assert outcome.worst[-1].more == book.height - quality.WORST_SHOWN
    assert str(outcome.worst[-1]).endswith(f"(and {book.height - 3} more problem rows)")
    assert "crossed quote" in str(outcome.worst[0])


def test_rows_without_lineage_are_named_by_their_key(book):
    """A partition published before raw_lineage existed still names its offenders."""
    late = book.head(1).with_columns(ts=pl.col("expiry") + pl.duration(minutes=5))
    (error,) = _only(quality.within_contract_life(late)).worst
    symbol = late["option_symbol"][0]
    assert error.location.file.startswith(f"3CN5 {symbol} at ")
    assert error.location.row is None and error.location.column == "ts"


def _after_expiry(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        ts=pl.when(_row(frame, 4)).then(pl.col("expiry") + pl.duration(minutes=5)).otherwise("ts")
    )


@pytest.mark.parametrize(
    ("check", "corrupt", "named"),
    [
        ("unique_keys", lambda f: pl.concat([f, f.slice(4, 1)]), [("ts", 5), ("ts", 21)]),
        (
            "bid_le_ask",
            lambda f: f.with_columns(
                bid=pl.when(_row(f, 4)).then(pl.col("ask") + 1).otherwise("bid")
            ),
            [("bid", 5)],
        ),
        (
            "non_negative_prices",
            lambda f: f.with_columns(ask=pl.when(_row(f, 4)).then(-0.5).otherwise("ask")),
            [("ask", 5)],
        ),
        ("within_contract_life", _after_expiry, [("ts", 5)]),
    ],
)
def test_checks_the_parser_forestalls_fail_on_rows_staged_by_another_path(
    tmp_path, book, check, corrupt, named
):
    """``validate_chain`` refuses duplicated keys, crossed, negative and late quotes by the
    same rules, so no source's rows reach these four checks with them: a drop cannot fail
    them. Rows staged by another path can, and then nothing is published."""
    code, head = "3CN5", book.head(20)  # the copy of row 5 a duplicate adds is row 21
    db = tmp_path / "warehouse.duckdb"
    with warehouse.connect(db) as con:
        warehouse.replace_partition(con, code, {"raw_option_chains": head})
        before = warehouse.partition_hash(con, "raw_option_chains", code)
        with warehouse.staged_partitions(
            con, [code], {"raw_option_chains": _with_lineage(corrupt(head))}
        ) as staged:
            [outcomes] = quality.audit_raw(
                staged.read("raw_option_chains"), staged.types("raw_option_chains"), 1.0
            ).values()
        assert warehouse.partition_hash(con, "raw_option_chains", code) == before
    assert not outcomes[check].passed
    assert [(e.location.column, e.location.row) for e in outcomes[check].worst] == named
    message = quality.audit_failure("raw_option_chains", code, outcomes)
    for column, row in named:
        assert f"\n  X1/chain.csv, row {row}, column '{column}': " in message
