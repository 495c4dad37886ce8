"""Staging and publishing partitions (write-audit-publish) in a real DuckDB file."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import duckdb
import polars as pl
import pytest

from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import LINEAGE_COLUMNS, RAW_COLUMNS
from hedge_pipeline_tests.conftest import small_book
from hedge_pipeline_tests.tables.staging import staging_tables

CODE, OTHER = "3CN5", "3IN5"
PUBLISH = {"raw_option_chains": "raw_option_chains", "raw_lineage": "raw_option_chains"}


@pytest.fixture
def book(synthetic_code_frame) -> pl.DataFrame:
    """A few quotes with their lineage, as validation hands them on."""
    return small_book(synthetic_code_frame, options=2, bars=5).with_columns(
        source_file=pl.lit(f"{CODE}/chain.csv"), source_row=pl.int_range(1, pl.len() + 1)
    )


@pytest.fixture
def con(tmp_path: Path, book: pl.DataFrame):
    """A warehouse already holding a version of ``CODE`` (half the book) and ``OTHER``."""
    with warehouse.connect(tmp_path / "warehouse.duckdb") as con:
        warehouse.replace_partition(con, CODE, {"raw_option_chains": book.head(4)})
        other = book.with_columns(weekly_code=pl.lit(OTHER))
        warehouse.replace_partition(con, OTHER, {"raw_option_chains": other})
        yield con


def _hashes(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], str]:
    return {(t, c): warehouse.partition_hash(con, t, c) for t in PUBLISH for c in (CODE, OTHER)}


def test_staged_rows_keep_their_lineage_and_take_the_published_types(con, book):
    with warehouse.staged_partitions(con, [CODE], {"raw_option_chains": book}) as staged:
        assert staging_tables(con) == [f"raw_option_chains__{CODE}"]
        rows = staged.read("raw_option_chains")
        assert rows.columns == RAW_COLUMNS + LINEAGE_COLUMNS
        assert rows.sort("source_row").equals(book.select(rows.columns))
        types = staged.types("raw_option_chains")
        published = {r[0]: r[1] for r in con.execute("DESCRIBE raw_option_chains").fetchall()}
        assert types == published  # the lineage columns are staged, never published
    assert not staging_tables(con)


def test_duplicate_keys_are_staged_for_the_audit_to_see(con, book):
    """The staging table has no constraints: the unique_keys check names a duplicate; the
    published table's key would have refused the insert with a bare constraint error."""
    doubled = pl.concat([book, book.head(1)])
    with warehouse.staged_partitions(con, [CODE], {"raw_option_chains": doubled}) as staged:
        assert staged.read("raw_option_chains").height == book.height + 1


def test_publish_replaces_every_table_at_once_and_drops_the_staging(con, book):
    before = _hashes(con)
    with warehouse.staged_partitions(con, [CODE], {"raw_option_chains": book}) as staged:
        staged.publish([CODE], PUBLISH)
        assert not staging_tables(con)
    after = _hashes(con)
    assert {k: v for k, v in after.items() if k[1] == OTHER} == {
        k: v for k, v in before.items() if k[1] == OTHER
    }
    raw = warehouse.read_partition(con, "raw_option_chains", CODE)
    lineage = warehouse.read_partition(con, "raw_lineage", CODE)
    assert raw.columns == RAW_COLUMNS and raw.height == book.height
    assert lineage.join(raw, on=["weekly_code", "option_symbol", "ts"]).height == book.height
    assert sorted(lineage["source_row"]) == list(range(1, book.height + 1))


@pytest.mark.parametrize("how", ["not published", "exception", "publish refused"])
def test_a_partition_not_published_leaves_every_table_as_it_was(con, book, how):
    """An audit that fails (the block ends without ``publish``), an exception in the audit,
    and a publish the tables refuse half-way (raw_option_chains took its rows, then
    raw_lineage refuses a row without a file) all leave the published tables bit-identical
    and no staging table behind."""
    before = _hashes(con)
    frame = book.with_columns(
        source_file=pl.when(pl.col("source_row") == 3).then(None).otherwise("source_file")
    )
    raised = {"exception": RuntimeError, "publish refused": duckdb.ConstraintException}
    with (
        pytest.raises(raised[how]) if how in raised else nullcontext(),
        warehouse.staged_partitions(con, [CODE], {"raw_option_chains": frame}) as staged,
    ):
        if how == "exception":
            raise RuntimeError("the audit broke")
        if how == "publish refused":
            staged.publish([CODE], PUBLISH)
    assert _hashes(con) == before
    assert not staging_tables(con)


def test_the_staging_is_one_uncommitted_transaction_until_publish(con, book):
    """Another connection to the same database sees neither the staged view nor the new rows
    while the block runs, and sees every table's new partition once ``publish`` committed."""
    other = con.cursor()
    before = warehouse.partition_hash(other, "raw_option_chains", CODE)
    with warehouse.staged_partitions(con, [CODE], {"raw_option_chains": book}) as staged:
        assert staging_tables(con) == [f"raw_option_chains__{CODE}"]
        assert not staging_tables(other)
        staged.publish([CODE], PUBLISH)
        with pytest.raises(RuntimeError, match="already published"):
            staged.publish([CODE], PUBLISH)
    assert warehouse.partition_hash(other, "raw_option_chains", CODE) != before
    assert warehouse.partition_hash(other, "raw_option_chains", CODE) == (
        warehouse.partition_hash(con, "raw_option_chains", CODE)
    )
    assert warehouse.read_partition(other, "raw_lineage", CODE).height == book.height


def test_staged_rows_are_the_frame_cast_to_the_published_types(con, book):
    """The staging reads the frame in place, cast as the insert would cast it: a column the
    frame holds as text is staged as the table's type, and ``read`` can take a few columns."""
    as_text = book.with_columns(pl.col("strike").cast(pl.String))
    with warehouse.staged_partitions(con, [CODE], {"raw_option_chains": as_text}) as staged:
        assert staged.types("raw_option_chains")["strike"] == "DOUBLE"
        rows = staged.read("raw_option_chains", ["option_symbol", "ts", "strike"])
        assert rows.columns == ["option_symbol", "ts", "strike"]
        assert rows.sort("option_symbol", "ts")["strike"].to_list() == (
            book.sort("option_symbol", "ts")["strike"].to_list()
        )
    bad = book.with_columns(strike=pl.lit("not a number"))
    with (
        pytest.raises(duckdb.ConversionException),
        warehouse.staged_partitions(con, [CODE], {"raw_option_chains": bad}) as staged,
    ):
        staged.read("raw_option_chains")
    assert not staging_tables(con)


def test_a_range_staged_at_once_publishes_only_the_codes_that_passed(con, book):
    """Two codes staged in one view, as the features step stages a range: publishing one
    replaces that code's rows and leaves the other's published partition bit-identical;
    publishing none is refused (the block rolls back instead); the hashes of several codes
    in one query are each code's own."""
    before = _hashes(con)
    both = pl.concat([book, book.with_columns(weekly_code=pl.lit(OTHER))])
    with warehouse.staged_partitions(con, [CODE, OTHER], {"raw_option_chains": both}) as staged:
        assert staging_tables(con) == [f"raw_option_chains__{CODE}__{OTHER}"]
        assert staged.read("raw_option_chains")["weekly_code"].to_list() == (
            [CODE] * book.height + [OTHER] * book.height
        )
        with pytest.raises(ValueError, match="no weekly code to publish"):
            staged.publish([], PUBLISH)
        staged.publish([CODE], PUBLISH)
    after = _hashes(con)
    assert after[("raw_option_chains", OTHER)] == before[("raw_option_chains", OTHER)]
    assert after[("raw_option_chains", CODE)] != before[("raw_option_chains", CODE)]
    assert warehouse.read_partition(con, "raw_option_chains", CODE).height == book.height
    assert warehouse.partition_hashes(con, "raw_option_chains", [CODE, OTHER, "NONE1"]) == {
        CODE: after[("raw_option_chains", CODE)],
        OTHER: after[("raw_option_chains", OTHER)],
        "NONE1": "0:0",
    }
