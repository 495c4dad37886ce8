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

Prices outside the static no-arbitrage bounds are refused here, like crossed quotes, when they
are far outside: a bid, ask or last more than ``STATIC_BOUND_TOLERANCE`` above what the option
can be worth at most (see ``ABOVE_STATIC_BOUND``). The exact, discounted bounds are audited on
the whole staged partition by ``quality.static_no_arbitrage``, which tolerates a rate of stale
quotes; a price of 1e308 is no stale quote and must not get as far as the warehouse.

The named rules (``CROSSED_QUOTE``, ``AFTER_EXPIRY``, ...) are shared with ``quality``, whose
checks of the staged partition report the rows they catch in the same form.
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


CROSSED_QUOTE = Rule(
    "bid",
    pl.col("bid") > pl.col("ask"),
    pl.format("bid {} > ask {} (crossed quote)", _fmt("bid"), _fmt("ask")),
)
AFTER_EXPIRY = Rule(
    "ts",
    pl.col("ts") > pl.col("expiry"),
    pl.format("quote at {} is after expiry {}", _fmt("ts"), _fmt("expiry")),
)
NON_POSITIVE = (
    Rule("strike", pl.col("strike") <= 0, pl.format("strike {} must be > 0", _fmt("strike"))),
    Rule(
        "underlying_price",
        pl.col("underlying_price") <= 0,
        pl.format("underlying price {} must be > 0", _fmt("underlying_price")),
    ),
)
NEGATIVE_PRICE = (
    Rule("bid", pl.col("bid") < 0, pl.format("negative price: bid {}", _fmt("bid"))),
    Rule("ask", pl.col("ask") < 0, pl.format("negative price: ask {}", _fmt("ask"))),
    Rule(
        "last",
        (pl.col("last") < 0) | pl.col("last").is_nan() | pl.col("last").is_infinite(),
        pl.format("negative or non-finite price: last {}", _fmt("last")),
    ),
)

# How far above its static bound a price may be before it is refused at parse time, as a share
# of the bound. The bound is the undiscounted one (a call is worth at most the underlying, a
# put at most the strike): it holds for American exercise as well as European and needs no
# rate or time to expiry, so a wrong rate or expiry cannot make a good price look bad. The
# packaged sources quote at most half their bound (history: a deep put in the 2008 crash;
# synthetic: a sixth), so the tolerance is not there for them: it lets a real book's quote
# stand when its underlying price was sampled a moment apart from it (a 10% move between the
# two) or a deep in-the-money quote is wide. A fat finger (a price in cents, 1e308) is not.
STATIC_BOUND_TOLERANCE = 0.10


def _above_static_bound(col: str) -> Rule:
    is_call = pl.col("option_type") == "C"
    bound = pl.when(is_call).then(pl.col("underlying_price")).otherwise(pl.col("strike"))
    return Rule(
        col,
        pl.col(col) > (1.0 + STATIC_BOUND_TOLERANCE) * bound,
        pl.format(
            "{} {} is more than {}% above the static bound {}: a {} is worth at most {}",
            pl.lit(col),
            _fmt(col),
            pl.lit(round(STATIC_BOUND_TOLERANCE * 100)),
            bound.cast(pl.String),
            pl.when(is_call).then(pl.lit("call")).otherwise(pl.lit("put")),
            pl.when(is_call).then(pl.lit("the underlying price")).otherwise(pl.lit("its strike")),
        ),
    )


ABOVE_STATIC_BOUND = tuple(_above_static_bound(col) for col in ("bid", "ask", "last"))


def judge(frame: pl.DataFrame, rules: list[Rule] | tuple[Rule, ...]) -> pl.DataFrame:
    """``frame`` with ``column`` and ``reason`` of the first of ``rules`` each row breaks (both
    null for a row that breaks none): one row, one problem, the earliest rule's.

    Reasons are formatted only when some row breaks a rule: formatting a message for every
    rule of every row, to keep none of them, was most of the cost of validating good data."""
    broken = [rule.bad.fill_null(False) for rule in rules]
    problem_column = pl.when(broken[0]).then(pl.lit(rules[0].column))
    for rule, bad in zip(rules[1:], broken[1:], strict=True):
        problem_column = problem_column.when(bad).then(pl.lit(rule.column))
    judged = frame.with_columns(problem_column.otherwise(None).alias("column"))
    if judged["column"].null_count() == judged.height:
        return judged.with_columns(pl.lit(None, dtype=pl.String).alias("reason"))
    problem_reason = pl.when(broken[0]).then(rules[0].reason)
    for rule, bad in zip(rules[1:], broken[1:], strict=True):
        problem_reason = problem_reason.when(bad).then(rule.reason)
    return judged.with_columns(problem_reason.otherwise(None).alias("reason"))


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
        *NON_POSITIVE,
        *NEGATIVE_PRICE,
        Rule("volume", pl.col("volume") < 0, pl.format("negative volume {}", _fmt("volume"))),
        Rule(
            "open_interest",
            pl.col("open_interest") < 0,
            pl.format("negative open interest {}", _fmt("open_interest")),
        ),
        CROSSED_QUOTE,
        *ABOVE_STATIC_BOUND,
        AFTER_EXPIRY,
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
    """Rows fit to store and rows set aside (with column and reason), both with their lineage
    columns: the staged partition keeps them, so that its audit names file and row too."""

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

    judged = judge(df.sort("source_file", "source_row"), _rules())
    bad = judged.filter(pl.col("column").is_not_null())
    if policy == "reject" and not bad.is_empty():
        first = bad.row(0, named=True)
        raise ChainDataError(
            Location(first["source_file"], first["source_row"], first["column"]),
            first["reason"],
            more=bad.height - 1,
        )
    valid = judged.filter(pl.col("column").is_null()).select(RAW_COLUMNS + LINEAGE_COLUMNS)
    if valid.is_empty():
        first = bad.row(0, named=True)
        raise ChainDataError(
            Location(first["source_file"]),
            f"every row is bad ({bad.height} rows); first: row {first['source_row']}, "
            f"column {first['column']!r}: {first['reason']}",
        )
    return ValidationResult(valid=valid, quarantined=bad)
