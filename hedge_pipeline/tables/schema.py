"""The canonical ``raw_option_chains`` schema (docs/design.md §3) and the error every reader raises.

Every source (synthetic, files, alpaca) returns a Polars frame with exactly
``RAW_COLUMNS`` plus two lineage columns, ``source_file`` and ``source_row``, which name where
each row came from so that a validation error can point at a file, a row and a column. The
lineage columns never enter ``raw_option_chains``: they stay with the staged rows while the
blocking checks audit them (so that a failed check names file and row too) and are published
beside them, in table ``raw_lineage`` (``tables.warehouse``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")

RAW_SCHEMA: dict[str, pl.DataType] = {
    "weekly_code": pl.String(),
    "ts": UTC_TS,
    "underlying": pl.String(),
    "underlying_kind": pl.String(),
    "underlying_price": pl.Float64(),
    "option_symbol": pl.String(),
    "option_type": pl.String(),
    "strike": pl.Float64(),
    "expiry": UTC_TS,
    "bid": pl.Float64(),
    "ask": pl.Float64(),
    "last": pl.Float64(),
    "volume": pl.Int64(),
    "open_interest": pl.Int64(),
    "rate": pl.Float64(),
    "dividend_yield": pl.Float64(),
}
RAW_COLUMNS: list[str] = list(RAW_SCHEMA)
RAW_KEY: list[str] = ["weekly_code", "option_symbol", "ts"]

LINEAGE_SCHEMA: dict[str, pl.DataType] = {"source_file": pl.String(), "source_row": pl.Int64()}
LINEAGE_COLUMNS: list[str] = list(LINEAGE_SCHEMA)

# How DuckDB spells each Polars type of the market-data frames: the types the schema check
# expects of a table, and those of the lineage columns a staged partition adds.
DUCKDB_TYPES: dict[pl.DataType, str] = {
    pl.String(): "VARCHAR",
    pl.Float64(): "DOUBLE",
    pl.Int64(): "BIGINT",
    UTC_TS: "TIMESTAMP",
}

# Columns that may be null in a valid quote: a quote without a trade has no `last`, and many
# feeds publish no volume or open interest.
NULLABLE_COLUMNS: frozenset[str] = frozenset({"last", "volume", "open_interest"})

UNDERLYING_KINDS: frozenset[str] = frozenset({"future", "equity"})
OPTION_TYPES: frozenset[str] = frozenset({"C", "P"})

WEEKLY_CODE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

DUCKDB_RAW_DDL = """
CREATE TABLE IF NOT EXISTS raw_option_chains (
    weekly_code VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    underlying VARCHAR NOT NULL,
    underlying_kind VARCHAR NOT NULL,
    underlying_price DOUBLE NOT NULL,
    option_symbol VARCHAR NOT NULL,
    option_type VARCHAR NOT NULL,
    strike DOUBLE NOT NULL,
    expiry TIMESTAMP NOT NULL,
    bid DOUBLE NOT NULL,
    ask DOUBLE NOT NULL,
    last DOUBLE,
    volume BIGINT,
    open_interest BIGINT,
    rate DOUBLE NOT NULL,
    dividend_yield DOUBLE NOT NULL,
    PRIMARY KEY (weekly_code, option_symbol, ts)
)
"""


@dataclass(frozen=True)
class Location:
    """Where a bad value sits: a file, a 1-based row of data (None: the whole file), a column."""

    file: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)


class ChainDataError(ValueError):
    """Input quotes that cannot be stored. The message names file, row, column and reason.

    Raised before anything is written, so the warehouse keeps its previous contents.
    """

    def __init__(self, location: Location, reason: str, *, more: int = 0) -> None:
        self.location = location
        self.reason = reason
        self.more = more
        suffix = f" (and {more} more problem rows)" if more else ""
        super().__init__(f"{location}: {reason}{suffix}")


class UnknownWeeklyCodeError(KeyError):
    """A weekly code the source does not hold."""

    def __init__(self, code: str, known: list[str]) -> None:
        shown = ", ".join(known[:20]) + (" …" if len(known) > 20 else "")
        super().__init__(f"unknown weekly code {code!r}; the source holds: {shown or 'nothing'}")

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument: the message in quotes.
        return str(self.args[0])


def check_weekly_code(code: str) -> str:
    """Return ``code`` if it is a valid partition key (letters, digits, '-', '_'), else raise."""
    if not WEEKLY_CODE_RE.match(code):
        raise ValueError(
            f"invalid weekly code {code!r}: use letters, digits, '-' and '_' only (max 64 chars)"
        )
    return code


def empty_raw_frame(with_lineage: bool = True) -> pl.DataFrame:
    schema = dict(RAW_SCHEMA)
    if with_lineage:
        schema.update(LINEAGE_SCHEMA)
    return pl.DataFrame(schema=schema)


def option_symbol(weekly_code: str, option_type: str, strike: float) -> str:
    """Symbol for options that carry none of their own (synthetic and per-option files).

    ``option_symbol("3CN5", "C", 111.5) == "3CN5_C111.5"``; Alpaca keeps its OCC symbols.
    """
    return f"{weekly_code}_{option_type}{strike:g}"
