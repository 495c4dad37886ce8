"""Row-level rules every raw quote must satisfy before it is stored.

Sources parse; this module judges. A rule names the column it is about and a reason that
shows the offending values, so an error reads like
``3CN5/CALL_111.5.csv, row 17, column 'bid': bid 1.25 > ask 1.1 (crossed quote)``.

Two policies (``HEDGE_BAD_ROWS`` or the ``bad_rows`` setting of the data-quality resource):

* ``reject`` (default): the first bad row (in file, row order) raises ``ChainDataError``, the
  message counts the others, and nothing is written.
* ``quarantine``: bad rows are set aside with their column and reason (the asset stores them in
  table ``quarantined_quotes`` and reports counts per reason in its metadata); the valid rows
  are stored. For a duplicated key the first occurrence is kept and later ones are quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from hedge_pipeline.tables.schema import (
    LINEAGE_COLUMNS,
    NULLABLE_COLUMNS,
    OPTION_TYPES,
    RAW_COLUMNS,
    RAW_KEY,
    RAW_SCHEMA,
    UNDERLYING_KINDS,
    WEEKLY_CODE_RE,
    ChainDataError,
    Location,
)

Policy = Literal["reject", "quarantine"]
POLICIES: tuple[str, ...] = ("reject", "quarantine")


@dataclass(frozen=True)
class Rule:
    column: str
    bad: pl.Expr  # true where the row breaks the rule (null counts as not broken)
    reason: pl.Expr  # a string describing the break, built from the row's values


def _fmt(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String).fill_null("null")


def _rules() -> list[Rule]:
    """The rules in the order they are reported; the first broken one names a row's problem."""
    rules: list[Rule] = []
    for col, dtype in RAW_SCHEMA.items():
        if col in NULLABLE_COLUMNS:
            continue
        missing = pl.col(col).is_null()
        if dtype == pl.Float64():
            missing = missing | pl.col(col).is_nan() | pl.col(col).is_infinite()
        elif dtype == pl.String():
            # A blank name (an empty contract.json field, a cell holding spaces) says as little
            # as a null one; stored, it would become an underlying or option called ''.
            missing = missing | (pl.col(col).str.strip_chars() == "")
        rules.append(
            Rule(col, missing, pl.format("missing or non-finite {} ({})", pl.lit(col), _fmt(col)))
        )
    rules += [
        Rule(
            "weekly_code",
            ~pl.col("weekly_code").str.contains(WEEKLY_CODE_RE.pattern),
            pl.format(
                "invalid weekly code {} (letters, digits, '-', '_' only)", _fmt("weekly_code")
            ),
        ),
        Rule(
            "option_type",
            ~pl.col("option_type").is_in(sorted(OPTION_TYPES)),
            pl.format("unknown option type {} (expected 'C' or 'P')", _fmt("option_type")),
        ),
        Rule(
            "underlying_kind",
            ~pl.col("underlying_kind").is_in(sorted(UNDERLYING_KINDS)),
            pl.format(
                "unknown underlying kind {} (expected 'future' or 'equity')",
                _fmt("underlying_kind"),
            ),
        ),
        Rule("strike", pl.col("strike") <= 0, pl.format("strike {} must be > 0", _fmt("strike"))),
        Rule(
            "underlying_price",
            pl.col("underlying_price") <= 0,
            pl.format("underlying price {} must be > 0", _fmt("underlying_price")),
        ),
        Rule("bid", pl.col("bid") < 0, pl.format("negative price: bid {}", _fmt("bid"))),
        Rule("ask", pl.col("ask") < 0, pl.format("negative price: ask {}", _fmt("ask"))),
        Rule(
            "last",
            (pl.col("last") < 0) | pl.col("last").is_nan() | pl.col("last").is_infinite(),
            pl.format("negative or non-finite price: last {}", _fmt("last")),
        ),
        Rule("volume", pl.col("volume") < 0, pl.format("negative volume {}", _fmt("volume"))),
        Rule(
            "open_interest",
            pl.col("open_interest") < 0,
            pl.format("negative open interest {}", _fmt("open_interest")),
        ),
        Rule(
            "bid",
            pl.col("bid") > pl.col("ask"),
            pl.format("bid {} > ask {} (crossed quote)", _fmt("bid"), _fmt("ask")),
        ),
        Rule(
            "ts",
            pl.col("ts") > pl.col("expiry"),
            pl.format("quote at {} is after expiry {}", _fmt("ts"), _fmt("expiry")),
        ),
        Rule(
            "option_symbol",
            pl.struct("strike", "option_type", "expiry", "underlying")
            .n_unique()
            .over("weekly_code", "option_symbol")
            > 1,
            pl.format(
                "option {} has inconsistent strike/type/expiry/underlying across rows",
                _fmt("option_symbol"),
            ),
        ),
        Rule(
            "ts",
            pl.int_range(pl.len()).over(RAW_KEY) > 0,
            pl.format(
                "duplicate quote for ({}, {}, {}): the key must be unique",
                _fmt("weekly_code"),
                _fmt("option_symbol"),
                _fmt("ts"),
            ),
        ),
    ]
    return rules


@dataclass(frozen=True)
class ValidationResult:
    """Rows fit to store (canonical columns only) and rows set aside (with column and reason)."""

    valid: pl.DataFrame
    quarantined: pl.DataFrame

    def reason_counts(self) -> dict[str, int]:
        """How many rows were quarantined per column, for materialization metadata."""
        if self.quarantined.is_empty():
            return {}
        counts = self.quarantined.group_by("column").len().sort("column")
        return dict(zip(counts["column"].to_list(), counts["len"].to_list(), strict=True))


def validate_chain(df: pl.DataFrame, policy: str = "reject") -> ValidationResult:
    """Check every row of a source's frame (canonical + lineage columns) against the rules.

    Raises ``ChainDataError`` (policy ``reject``) naming the first bad row's file, row, column
    and reason; with ``quarantine`` returns the good rows and the bad ones with their reasons.
    An empty frame is an error under both policies: there is nothing to store, and an empty
    partition would silently replace good data.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown bad-row policy {policy!r}; expected one of {POLICIES}")
    missing = [c for c in RAW_COLUMNS + LINEAGE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"source frame lacks columns {missing}: a source bug, not bad input")
    if df.is_empty():
        files = ", ".join(sorted(set(df["source_file"].to_list()))) or "<source>"
        raise ChainDataError(Location(files), "no quotes: the input holds no rows")

    rules = _rules()
    problem_column = pl.when(rules[0].bad.fill_null(False)).then(pl.lit(rules[0].column))
    problem_reason = pl.when(rules[0].bad.fill_null(False)).then(rules[0].reason)
    for rule in rules[1:]:
        problem_column = problem_column.when(rule.bad.fill_null(False)).then(pl.lit(rule.column))
        problem_reason = problem_reason.when(rule.bad.fill_null(False)).then(rule.reason)
    judged = df.sort("source_file", "source_row").with_columns(
        problem_column.otherwise(None).alias("column"),
        problem_reason.otherwise(None).alias("reason"),
    )
    bad = judged.filter(pl.col("column").is_not_null())
    if policy == "reject" and not bad.is_empty():
        first = bad.row(0, named=True)
        raise ChainDataError(
            Location(first["source_file"], first["source_row"], first["column"]),
            first["reason"],
            more=bad.height - 1,
        )
    valid = judged.filter(pl.col("column").is_null()).select(RAW_COLUMNS)
    if valid.is_empty():
        first = bad.row(0, named=True)
        raise ChainDataError(
            Location(first["source_file"]),
            f"every row is bad ({bad.height} rows); first: row {first['source_row']}, "
            f"column {first['column']!r}: {first['reason']}",
        )
    return ValidationResult(valid=valid, quarantined=bad)
