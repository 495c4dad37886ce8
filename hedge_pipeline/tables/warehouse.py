"""DuckDB storage of the market-data tables (docs/design.md §3).

Writes replace one weekly code's rows in one transaction (delete, then insert), so a
re-materialized partition never duplicates rows and a failed write leaves the table as it was.
Connections are short-lived: DuckDB lets one process hold the file read-write, so a step
holds the file only while it reads its inputs and writes its outputs. (``greeks_features``
keeps one connection from its read to its publish, through its compute: writers queue behind
the ``duckdb_writer`` pool anyway, and a second open and close of the file cost ~30 ms, more
than a history code's whole compute.)

The market-data assets write-audit-publish (``staged_partitions``). Partitions are first
staged in schema ``staging`` of the same file, one staging view per published table (named
after the first and last code staged: ``staging."raw_option_chains__3CN5"``), over the
incoming Polars frame handed to DuckDB as Arrow, without a copy: every column cast to the
published table's type, without its constraints. The rows are cast exactly as publishing
casts them, so the schema check sees the types they would get, and a duplicate key reaches
the ``unique_keys`` check instead of stopping the insert with a constraint error. The raw
rows keep their lineage (``source_file``, ``source_row``) there. The blocking checks read
the staged rows, each code judged on its own; ``publish`` replaces the partitions of the
codes that passed in every published table (``raw_option_chains``, ``raw_lineage``,
``quarantined_quotes``) from them and drops the staging. A code that failed is not
published, and its published partitions are never touched. Both market-data steps stage a
run's whole range at once (the raw step after parsing each code's files on its own), so a
history's thousand small codes cost a few statements and one transaction, not a thousand.

Staging, audit and publish are ONE transaction, committed by ``publish`` and rolled back by
anything else: no other connection ever sees the staging, and a process killed in between
leaves nothing behind. The rows are written once, by the publish: a staging *table*,
committed, read back whole and dropped again, made the write-audit-publish of a 50k-row code
cost ~330 ms of CPU against ~230 ms with views (``benchmarks/pipeline.md``). A publish that
breaks a published table's key aborts the whole transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from hedge_pipeline.tables.schema import (
    DUCKDB_RAW_DDL,
    DUCKDB_TYPES,
    LINEAGE_COLUMNS,
    LINEAGE_SCHEMA,
    check_weekly_code,
)

_RAW_DDL_COLUMNS = DUCKDB_RAW_DDL.split("(", 1)[1].rsplit("PRIMARY KEY", 1)[0].rstrip().rstrip(",")

FEATURE_DDL_COLUMNS = """
    mid DOUBLE, spread DOUBLE, tau DOUBLE, forward DOUBLE, log_moneyness DOUBLE,
    iv DOUBLE, iv_status VARCHAR NOT NULL,
    delta DOUBLE, gamma DOUBLE, vega DOUBLE, theta DOUBLE, rho DOUBLE,
    underlying_log_return DOUBLE, realized_vol DOUBLE, atm_iv DOUBLE, iv_skew DOUBLE,
    std_moneyness DOUBLE
"""

# ``greeks_features`` has no PRIMARY KEY: its rows are keyed by construction (one per
# published raw row, whose table holds the key; ``compute_features`` joins per-bar aggregates
# onto them, one row each), and building the key's index was half the cost of publishing a
# whole history's features (0.33 s of 0.61 s for 378,090 rows, benchmarks/pipeline.md).
# A warehouse created before keeps its key (``CREATE TABLE IF NOT EXISTS``) and works as is.
TABLE_DDL: dict[str, str] = {
    "raw_option_chains": DUCKDB_RAW_DDL,
    "greeks_features": f"""
        CREATE TABLE IF NOT EXISTS greeks_features ({_RAW_DDL_COLUMNS},
        {FEATURE_DDL_COLUMNS})
    """,
    "quarantined_quotes": f"""
        CREATE TABLE IF NOT EXISTS quarantined_quotes (
            {_RAW_DDL_COLUMNS.replace(" NOT NULL", "")},
            source_file VARCHAR, source_row BIGINT, "column" VARCHAR, reason VARCHAR
        )
    """,
    # Where each published raw row came from (file and 1-based row of data), published with
    # the rows: a later check (greeks_features' IV solve rate) names file and row with it.
    "raw_lineage": """
        CREATE TABLE IF NOT EXISTS raw_lineage (
            weekly_code VARCHAR NOT NULL, option_symbol VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
            source_file VARCHAR NOT NULL, source_row BIGINT NOT NULL,
            PRIMARY KEY (weekly_code, option_symbol, ts)
        )
    """,
    # Written whole by the portfolio_selection asset (hedge_pipeline.stages.selection.book).
    "portfolio_selection": """
        CREATE TABLE IF NOT EXISTS portfolio_selection (
            weekly_code VARCHAR NOT NULL, option_symbol VARCHAR NOT NULL,
            option_type VARCHAR NOT NULL, strike DOUBLE NOT NULL, weight DOUBLE NOT NULL,
            is_hedge_instrument BOOLEAN NOT NULL, rows BIGINT NOT NULL,
            train_start TIMESTAMP NOT NULL, train_end TIMESTAMP NOT NULL,
            val_start TIMESTAMP NOT NULL, val_end TIMESTAMP NOT NULL,
            test_start TIMESTAMP NOT NULL, test_end TIMESTAMP NOT NULL,
            template VARCHAR NOT NULL,
            PRIMARY KEY (weekly_code, option_symbol)
        )
    """,
}

# How long a step waits for another process to release the DuckDB file. Writers queue behind
# the `duckdb_writer` pool, so this only covers readers and writers outside Dagster.
LOCK_TIMEOUT_S = 120.0

STAGING_SCHEMA = "staging"


class WarehouseLockTimeout(RuntimeError):
    """Another process held the DuckDB file for longer than ``LOCK_TIMEOUT_S``."""


@contextmanager
def connect(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting (with backoff) while another process holds its lock.

    The connection is closed however the block exits, so a failed step releases the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not path.exists():
        read_only = False  # a read-only connection cannot create the file
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise WarehouseLockTimeout(f"could not open {path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    try:
        if not read_only:
            ensure_tables(con)
        yield con
    finally:
        con.close()


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in TABLE_DDL.values():
        con.execute(ddl)


def replace_partition(
    con: duckdb.DuckDBPyConnection,
    weekly_code: str,
    tables: dict[str, pl.DataFrame],
) -> None:
    """Replace ``weekly_code``'s rows in each table with the given frames, in one transaction."""
    replace_rows(con, tables, "weekly_code = ?", [weekly_code])


def replace_rows(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, pl.DataFrame],
    where: str = "TRUE",
    params: list | None = None,
) -> None:
    """Delete each table's rows matching ``where`` and insert its frame, in one transaction.

    Column order follows the table; a frame lacking a column or holding a value the table
    refuses (type, NOT NULL, duplicate key) aborts the whole transaction, leaving every table
    as it was.
    """
    with _transaction(con):
        for table, frame in tables.items():
            con.execute(f"DELETE FROM {table} WHERE {where}", params or [])
            _insert(con, table, frame)


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Everything in the block commits together, or (on any exception) nothing does."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]


def _insert(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Append ``frame``'s rows to ``table``, by column name, in the table's column order."""
    if not frame.height:
        return
    columns = _columns(con, table)
    quoted = ", ".join(f'"{c}"' for c in columns)
    con.register("incoming", _naive_utc(frame.select(columns)).to_arrow())
    con.execute(f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM incoming")
    con.unregister("incoming")


class StagedPartitions:
    """Weekly codes' staged rows (views): read them, audit them, publish them or not.

    Made by ``staged_partitions``, valid inside its block only.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, codes: Sequence[str], names: dict[str, str]
    ) -> None:
        self._con = con
        self._codes = set(codes)  # the weekly codes staged
        self._names = names  # published table -> its staging view
        self.open = True  # the staging transaction: neither committed nor rolled back

    def read(
        self, table: str, columns: list[str] | None = None, *, ordered: bool = True
    ) -> pl.DataFrame:
        """The staged rows of ``table`` (with their lineage where they carry it), in key order
        unless not ``ordered`` (an audit that does not care saves DuckDB a sort); only
        ``columns`` if given (an audit that needs four columns of forty reads four)."""
        wanted = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        order = " ORDER BY weekly_code, option_symbol, ts" if ordered else ""
        return query(self._con, f"SELECT {wanted} FROM {self._names[table]}{order}")

    def name(self, table: str) -> str:
        """The qualified name of ``table``'s staging view, for a query of the block's own
        (visible on this connection only: the staging is not committed)."""
        return self._names[table]

    def types(self, table: str) -> dict[str, str]:
        """DuckDB types of the staged columns ``table`` publishes: the types its rows would get."""
        published = set(_columns(self._con, table))
        return {
            name: typ
            for name, typ, *_ in self._con.execute(f"DESCRIBE {self._names[table]}").fetchall()
            if name in published
        }

    def publish(self, codes: Sequence[str], sources: dict[str, str]) -> None:
        """Replace the rows of weekly codes ``codes`` (the staged ones that passed their
        audit) in each published table with their staged rows of ``sources[table]`` (columns
        by name), drop the staging views and commit: the transaction that staged them ends
        here, so a reader sees every table's old partitions or every table's new ones. A
        staged table may fill several (the staged raw rows fill ``raw_option_chains`` and
        ``raw_lineage``). A refused row rolls everything back."""
        if not self.open:
            raise RuntimeError("these staged partitions are already published")
        if not codes:
            raise ValueError("no weekly code to publish: leave the block to roll back")
        where = f"WHERE weekly_code IN ({codes_sql(codes)})"
        # Every staged code passed (the rule): no filter for DuckDB to evaluate on each row.
        some = "" if set(codes) == self._codes else f" {where}"
        for table, source in sources.items():
            quoted = ", ".join(f'"{c}"' for c in _columns(self._con, table))
            self._con.execute(f"DELETE FROM {table} {where}")
            self._con.execute(
                f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM {self._names[source]}{some}"
            )
        for name in self._names.values():
            self._con.execute(f"DROP VIEW {name}")
        self.open = False  # a COMMIT that fails has rolled the transaction back
        self._con.execute("COMMIT")


@contextmanager
def staged_partitions(
    con: duckdb.DuckDBPyConnection, codes: Sequence[str], tables: dict[str, pl.DataFrame]
) -> Iterator[StagedPartitions]:
    """Stage the new rows of weekly codes ``codes`` for each published table (write-audit-
    publish, see the module docstring); the block audits them and calls ``publish`` with
    those that pass. The staging is one uncommitted transaction on ``con``: ``publish``
    commits it, and a block that ends without publishing (or with an exception,
    ``publish``'s own included) rolls it back. The frames must stay unchanged until the
    block ends: the staging reads them in place."""
    tag = "__".join(dict.fromkeys(check_weekly_code(c) for c in (codes[0], codes[-1])))
    names = {t: f'{STAGING_SCHEMA}."{t}__{tag}"' for t in tables}
    incoming = {t: f"incoming__{t}__{tag}" for t in tables}
    con.execute("BEGIN TRANSACTION")
    staged = StagedPartitions(con, codes, names)
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA}")
        for table, frame in tables.items():
            typed = [(c, t) for c, t, *_ in con.execute(f"DESCRIBE {table}").fetchall()]
            published = {c for c, _ in typed}
            typed += [
                (c, DUCKDB_TYPES[LINEAGE_SCHEMA[c]])
                for c in LINEAGE_COLUMNS
                if c in frame.columns and c not in published
            ]
            columns = [c for c, _ in typed]
            con.register(incoming[table], _naive_utc(frame.select(columns)).to_arrow())
            casts = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in typed)
            # A staging table that an older version committed (it staged into tables).
            con.execute(f"DROP TABLE IF EXISTS {names[table]}")
            con.execute(f'CREATE VIEW {names[table]} AS SELECT {casts} FROM "{incoming[table]}"')
        yield staged
    finally:
        if staged.open:
            con.execute("ROLLBACK")
        for name in incoming.values():
            con.unregister(name)


def codes_sql(codes: Sequence[str]) -> str:
    """Weekly codes as SQL string literals for ``weekly_code IN (...)``: safe to inline, as a
    partition key holds letters, digits, '-' and '_' only (``check_weekly_code``).

    >>> codes_sql(["3CN5", "SP500-2018-12-28"])
    "'3CN5', 'SP500-2018-12-28'"
    """
    return ", ".join(f"'{check_weekly_code(c)}'" for c in codes)


def read_partitions(
    con: duckdb.DuckDBPyConnection, table: str, codes: Sequence[str], *, ordered: bool = True
) -> pl.DataFrame:
    """Weekly codes' rows of a table, timestamps as UTC, in key order unless not ``ordered``
    (DuckDB's sort of a whole history's rows cost twice their read)."""
    order = " ORDER BY weekly_code, option_symbol, ts" if ordered else ""
    return query(con, f"SELECT * FROM {table} WHERE weekly_code IN ({codes_sql(codes)}){order}")


def read_partition(con: duckdb.DuckDBPyConnection, table: str, weekly_code: str) -> pl.DataFrame:
    """One weekly code's ``read_partitions``."""
    return read_partitions(con, table, [weekly_code])


def query(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    """Run ``sql`` and return a Polars frame whose TIMESTAMP columns are UTC-aware again."""
    frame = con.sql(sql, params=params).pl()
    return frame.with_columns(
        pl.col(c).dt.replace_time_zone("UTC")
        for c, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None
    )


def _naive_utc(frame: pl.DataFrame) -> pl.DataFrame:
    """TIMESTAMP columns hold UTC wall time; converting here keeps DuckDB's session time zone
    (the machine's, by default) out of the cast from timestamptz."""
    return frame.with_columns(
        pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        for c, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    )


def partition_hashes(
    con: duckdb.DuckDBPyConnection, table: str, codes: Sequence[str]
) -> dict[str, str]:
    """Order-independent content hash of each weekly code's partition (data version and
    idempotence tests), one query for them all; ``'0:0'`` for a code without rows.
    """
    if not codes:
        return {}
    columns = ", ".join(f'"{row[0]}"' for row in con.execute(f"DESCRIBE {table}").fetchall())
    # Fetched to the end (``fetchall``): DuckDB 2 refuses the connection's next relation
    # query while a result is left unfinished, as ``fetchone`` leaves it.
    found = con.execute(
        f"SELECT weekly_code, coalesce(bit_xor(hash({columns})), 0)::VARCHAR || ':' || count(*) "
        f"FROM {table} WHERE weekly_code IN ({codes_sql(codes)}) GROUP BY weekly_code"
    ).fetchall()
    return {code: "0:0" for code in codes} | dict(found)


def partition_hash(con: duckdb.DuckDBPyConnection, table: str, weekly_code: str) -> str:
    """One weekly code's ``partition_hashes``."""
    return partition_hashes(con, table, [weekly_code])[weekly_code]
