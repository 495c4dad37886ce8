"""DuckDB storage of the market-data tables (docs/design.md §3).

Writes replace one weekly code's rows in one transaction (delete, then insert), so a
re-materialized partition never duplicates rows and a failed write leaves the table as it was.
Connections are short-lived: DuckDB lets one process hold the file read-write, so every step
computes in memory first and holds the file only to read its inputs or write its outputs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from hedge_pipeline.tables.schema import DUCKDB_RAW_DDL

_RAW_DDL_COLUMNS = DUCKDB_RAW_DDL.split("(", 1)[1].rsplit("PRIMARY KEY", 1)[0].rstrip().rstrip(",")

FEATURE_DDL_COLUMNS = """
    mid DOUBLE, spread DOUBLE, tau DOUBLE, forward DOUBLE, log_moneyness DOUBLE,
    iv DOUBLE, iv_status VARCHAR NOT NULL,
    delta DOUBLE, gamma DOUBLE, vega DOUBLE, theta DOUBLE, rho DOUBLE,
    underlying_log_return DOUBLE, realized_vol DOUBLE, atm_iv DOUBLE, iv_skew DOUBLE,
    std_moneyness DOUBLE
"""

TABLE_DDL: dict[str, str] = {
    "raw_option_chains": DUCKDB_RAW_DDL,
    "greeks_features": f"""
        CREATE TABLE IF NOT EXISTS greeks_features ({_RAW_DDL_COLUMNS},
        {FEATURE_DDL_COLUMNS},
        PRIMARY KEY (weekly_code, option_symbol, ts))
    """,
    "quarantined_quotes": f"""
        CREATE TABLE IF NOT EXISTS quarantined_quotes (
            {_RAW_DDL_COLUMNS.replace(" NOT NULL", "")},
            source_file VARCHAR, source_row BIGINT, "column" VARCHAR, reason VARCHAR
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
    con.execute("BEGIN TRANSACTION")
    try:
        for table, frame in tables.items():
            columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
            quoted = ", ".join(f'"{c}"' for c in columns)
            con.execute(f"DELETE FROM {table} WHERE {where}", params or [])
            if frame.height:
                con.register("incoming", _naive_utc(frame.select(columns)).to_arrow())
                con.execute(f"INSERT INTO {table} ({quoted}) SELECT {quoted} FROM incoming")
                con.unregister("incoming")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def read_partition(con: duckdb.DuckDBPyConnection, table: str, weekly_code: str) -> pl.DataFrame:
    """One weekly code's rows of a table, in key order, timestamps as UTC."""
    return query(
        con,
        f"SELECT * FROM {table} WHERE weekly_code = $1 ORDER BY option_symbol, ts",
        [weekly_code],
    )


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


def partition_hash(con: duckdb.DuckDBPyConnection, table: str, weekly_code: str) -> str:
    """Order-independent content hash of one partition (data version and idempotence tests)."""
    columns = ", ".join(f'"{row[0]}"' for row in con.execute(f"DESCRIBE {table}").fetchall())
    (digest,) = con.execute(
        f"SELECT coalesce(bit_xor(hash({columns})), 0)::VARCHAR || ':' || count(*) "
        f"FROM {table} WHERE weekly_code = ?",
        [weekly_code],
    ).fetchone()
    return digest
