"""Write-audit-publish of the market-data partitions, through real in-process Dagster runs into a
real DuckDB file: a staged partition that fails a blocking check publishes nothing (every
published table keeps its content hash), leaves no staging table behind, records the failed
check's evaluation, and fails the run once with a message naming file, row and column.

Each blocking check that rows from a source can fail has its test here; the ones that the parser
refuses first (``unique_keys``, ``bid_le_ask``, ``non_negative_prices``,
``within_contract_life``) are audited on staged rows that bypass it, in ``test_quality.py`` and
``tables/test_warehouse.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.validation import STATIC_BOUND_TOLERANCE
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.stages.market_data.helpers import below_intrinsic_book, materialize_code
from hedge_pipeline_tests.tables.staging import staging_tables

CODE, OTHER = "WAP1", "WAP2"
TABLES = ("raw_option_chains", "raw_lineage", "quarantined_quotes", "greeks_features")
FILE = f"{CODE}/quotes.parquet"
# One offender line of a failure message: "  WAP1/quotes.parquet, row 17, column 'bid': ..."
OFFENDER = re.compile(r"^  (?P<file>[^,]+), row (?P<row>\d+), column '(?P<column>\w+)': ")


def _snapshot() -> dict[tuple[str, str], str]:
    """Content hash of every published market-data partition (its table's columns included)."""
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return {(t, c): warehouse.partition_hash(con, t, c) for t in TABLES for c in (CODE, OTHER)}


def _staging_tables() -> list[str]:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return staging_tables(con)


@pytest.fixture
def raw(instance, data_dir: Path, synthetic_code_frame) -> Path:
    """A warehouse holding a good version of ``CODE`` (the partition the tests re-stage) and
    of ``OTHER``, both assets materialized; returns the files source's folder."""
    folder = data_dir / "raw"
    for code in (CODE, OTHER):
        write_drop(small_book(synthetic_code_frame), folder, code)
        assert materialize_code(instance, code, kind="files", raw_dir=folder).success
    return folder


def _refused(result: dg.ExecuteInProcessResult, asset: str, checks: set[str]) -> str:
    """Assert the run failed at ``asset`` once, after recording ``checks`` as failed (with
    their worst offenders) and materializing nothing; return the failure message."""
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == asset
    assert not [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert not result.asset_materializations_for_node(asset)
    evaluations = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == asset
    }
    assert {name for name, e in evaluations.items() if not e.passed} == checks
    for name in checks:
        assert evaluations[name].metadata["worst_offenders"].value, name
    return failure.step_failure_data.user_failure_data.description


def _offenders(message: str) -> list[dict[str, str]]:
    return [m.groupdict() for line in message.splitlines() if (m := OFFENDER.match(line))]


def test_quotes_just_above_the_static_bounds_fail_the_audit_and_publish_nothing(
    instance, raw: Path, synthetic_code_frame
):
    """Prices within the parser's tolerance of their bound, but above the discounted bound:
    three of the book's 237 quotes (1.3%, above the 1% the check allows)."""
    book = small_book(synthetic_code_frame).with_row_index("i")
    rows = [10, 100, 200]  # a call and puts, at different bars
    bound = pl.when(pl.col("option_type") == "C").then("underlying_price").otherwise("strike")
    hit = pl.col("i").is_in(rows)
    assert 1 + STATIC_BOUND_TOLERANCE > 1.06  # so the parser lets these quotes through
    stale = book.with_columns(
        bid=pl.when(hit).then(bound * 1.05).otherwise("bid"),
        ask=pl.when(hit).then(bound * 1.06).otherwise("ask"),
    ).drop("i")
    write_drop(stale, raw, CODE)
    before = _snapshot()

    result = materialize_code(instance, CODE, kind="files", raw_dir=raw, raise_on_error=False)

    message = _refused(result, "raw_option_chains", {"static_no_arbitrage"})
    assert _snapshot() == before
    assert not _staging_tables()
    assert message.splitlines()[0] == (
        f"raw_option_chains {CODE!r} not published: blocking check(s) static_no_arbitrage "
        "failed on the staged rows; the published tables are unchanged"
    )
    assert "\nstatic_no_arbitrage: 3 quotes outside the static bounds" in message
    # The offenders named are the stale quotes themselves, each once, by its bid (dearer than
    # its bound, and than its neighbour in strike where it has one); Parquet rows are 1-based.
    named = [(o["file"], int(o["row"]), o["column"]) for o in _offenders(message)]
    assert sorted(named) == [(FILE, i + 1, "bid") for i in rows]
    assert "above the static upper bound" in message
    assert not result.asset_materializations_for_node("greeks_features")


def test_a_drifted_raw_table_fails_schema_and_types_and_keeps_its_rows(instance, raw: Path):
    """The staged rows take the published table's types, so a column whose type drifted fails
    the schema check before anything is published. A schema problem has a table and a column,
    no file or row."""
    with warehouse.connect(paths.warehouse_path()) as con:
        con.execute("ALTER TABLE raw_option_chains ALTER volume SET DATA TYPE DOUBLE")
    before = _snapshot()

    result = materialize_code(instance, CODE, kind="files", raw_dir=raw, raise_on_error=False)

    message = _refused(result, "raw_option_chains", {"schema_and_types"})
    assert _snapshot() == before
    assert not _staging_tables()
    assert "\n  table raw_option_chains, column 'volume': expected BIGINT, found DOUBLE" in message


def test_mids_below_intrinsic_fail_iv_solve_rate_and_keep_the_published_features(
    instance, raw: Path, synthetic_code_frame
):
    """Two deep in-the-money options bid at 0: each mid falls below its intrinsic value while
    the ask stays above it, so the raw quotes pass their audit (no bound is crossed by the
    whole quote, monotonicity holds within the spreads) and are published, and no implied vol
    solves for a quarter of the book: greeks_features publishes nothing, naming the rows in
    the source file through raw_lineage."""
    book, unsolved = below_intrinsic_book(synthetic_code_frame)
    write_drop(book.drop("i"), raw, CODE)
    before = _snapshot()

    result = materialize_code(instance, CODE, kind="files", raw_dir=raw, raise_on_error=False)

    assert result.asset_materializations_for_node("raw_option_chains")
    message = _refused(result, "greeks_features", {"iv_solve_rate"})
    after = _snapshot()
    assert after[("greeks_features", CODE)] == before[("greeks_features", CODE)]
    assert after[("raw_option_chains", CODE)] != before[("raw_option_chains", CODE)]
    assert not _staging_tables()
    rate = 1 - unsolved.height / book.height
    assert f"IV solved for {rate:.2%} of {book.height} quoted rows (floor 95.00%)" in message
    named = _offenders(message)
    assert len(named) == 3 and message.endswith(f"(and {unsolved.height - 3} more problem rows)")
    rows = {int(i) + 1 for i in unsolved["i"]}
    assert all(o["file"] == FILE and int(o["row"]) in rows and o["column"] == "bid" for o in named)


def test_a_drifted_features_table_fails_schema_and_types(instance, raw: Path):
    with warehouse.connect(paths.warehouse_path()) as con:
        con.execute("ALTER TABLE greeks_features ALTER iv SET DATA TYPE FLOAT")
    before = _snapshot()

    result = materialize_code(instance, CODE, kind="files", raw_dir=raw, raise_on_error=False)

    message = _refused(result, "greeks_features", {"schema_and_types"})
    after = _snapshot()
    assert after[("greeks_features", CODE)] == before[("greeks_features", CODE)]
    assert not _staging_tables()
    assert "\n  table greeks_features, column 'iv': expected DOUBLE, found FLOAT" in message


def test_a_price_far_above_its_bound_is_quarantined_under_quarantine(
    instance, raw: Path, synthetic_code_frame
):
    """The measured problem, an ask of 1e308: under ``quarantine`` the row is set aside with
    its file, row and reason, and the rest of the book is audited and published. (Under
    ``reject`` the malformed-drop corpus's ``price_above_static_bound`` case fails the run.)"""
    book = small_book(synthetic_code_frame)
    write_drop(
        book.with_columns(ask=pl.when(pl.int_range(pl.len()) == 7).then(1e308).otherwise("ask")),
        raw,
        CODE,
    )

    result = materialize_code(
        instance, CODE, kind="files", raw_dir=raw, bad_rows="quarantine", raise_on_error=False
    )

    assert result.success
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        quarantined = warehouse.read_partition(con, "quarantined_quotes", CODE)
        published = warehouse.read_partition(con, "raw_option_chains", CODE)
        lineage = warehouse.read_partition(con, "raw_lineage", CODE)
    assert quarantined.select("source_file", "source_row", "column").rows() == [(FILE, 8, "ask")]
    assert quarantined["reason"][0].startswith("ask 1e+308 is more than 10% above the static bound")
    assert published["ask"].max() < 1e3 and published.height == book.height - 1
    assert lineage.height == published.height and 8 not in lineage["source_row"]
    assert not _staging_tables()
