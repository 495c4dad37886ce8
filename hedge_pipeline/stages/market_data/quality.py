"""Data-quality checks on a staged weekly-code partition: the audit of write-audit-publish.

The market-data assets stage partitions (``tables.warehouse.staged_partitions``), run these
checks on the staged rows and publish only if every one passes: all are blocking, and a
failed one fails the run with ``audit_failure``'s message while the published tables stay as
they were. Ingest validation (``market_data.validation``) already refuses bad rows; these
checks re-verify the rows as DuckDB holds them, so data written by any other path is caught
too, and add the checks that need a whole cross-section: static no-arbitrage bounds and
monotonicity in strike at each timestamp, and the implied-vol solve rate.

``bid_le_ask``, ``non_negative_prices`` and ``within_contract_life`` judge with validation's
own rules (``CROSSED_QUOTE``, ...), and ``unique_keys`` with the staged key: rows that came
through ``validate_chain`` never fail them (it refused those rows first, and by the same
rules), so they fail only for rows staged by another path; their tests call them directly.

Each check judges every weekly code of the staged rows on its own rows, in one pass over
them (a run stages a range of codes), and returns a ``CheckOutcome`` per code
(``schema_matches``: one per staging) naming its worst offenders as validation names a bad
row (``ChainDataError``: ``3CN5/CALL_111.5.csv, row 17, column 'bid': reason``), from the
rows' lineage columns (``source_file``, ``source_row``) where the frame carries them, else by
key. The Dagster layer turns an outcome into an ``AssetCheckResult``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from hedge_pipeline.quant.daycount import SECONDS_PER_YEAR
from hedge_pipeline.stages.market_data.validation import (
    AFTER_EXPIRY,
    CROSSED_QUOTE,
    NEGATIVE_PRICE,
    NON_POSITIVE,
    Rule,
    judge,
)
from hedge_pipeline.tables.schema import (
    DUCKDB_TYPES,
    LINEAGE_COLUMNS,
    RAW_KEY,
    RAW_SCHEMA,
    ChainDataError,
    Location,
)

# Prices are compared with this absolute slack so that float rounding is never a violation.
PRICE_EPS = 1e-9
# Offenders a failed check names (worst first); the last one counts the rest.
WORST_SHOWN = 3

RAW_CHECKS = (
    "schema_and_types",
    "unique_keys",
    "bid_le_ask",
    "non_negative_prices",
    "within_contract_life",
    "static_no_arbitrage",
)
FEATURE_CHECKS = ("schema_and_types", "iv_solve_rate")


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    severity: Literal["ERROR", "WARN"] = "ERROR"
    metadata: dict[str, Any] = field(default_factory=dict)
    # The worst offending rows (at most WORST_SHOWN), each located like a parse error.
    worst: tuple[ChainDataError, ...] = ()


def _located(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with ``_file`` and ``_row``: where each row came from. Rows without lineage
    (a partition published before ``raw_lineage`` existed) are named by their key instead."""
    key = pl.format(
        "{} {} at {}", pl.col("weekly_code"), pl.col("option_symbol"), pl.col("ts").cast(pl.String)
    )
    if set(LINEAGE_COLUMNS) <= set(frame.columns):
        return frame.with_columns(
            _file=pl.coalesce(pl.col("source_file"), key), _row=pl.col("source_row")
        )
    return frame.with_columns(_file=key, _row=pl.lit(None, pl.Int64))


def _worst(offenders: pl.DataFrame) -> tuple[ChainDataError, ...]:
    """The first ``WORST_SHOWN`` of ``offenders`` (located, worst first, with ``column`` and
    ``reason``) as errors; the last one says how many more there are."""
    if offenders.is_empty():
        return ()
    shown = offenders.head(WORST_SHOWN).rows(named=True)
    more = offenders.height - len(shown)
    return tuple(
        ChainDataError(
            Location(r["_file"], r["_row"], r["column"]),
            r["reason"],
            more=more if i == len(shown) - 1 else 0,
        )
        for i, r in enumerate(shown)
    )


def _outcome(
    passed: bool,
    description: str,
    offenders: pl.DataFrame,
    metadata: dict[str, Any],
    severity: Literal["ERROR", "WARN"] = "ERROR",
) -> CheckOutcome:
    worst = _worst(offenders)
    return CheckOutcome(
        passed=passed,
        description=description,
        severity=severity,
        metadata={**metadata, "worst_offenders": [str(e) for e in worst]},
        worst=worst,
    )


Outcomes = dict[str, CheckOutcome]  # one check's outcome per weekly code


def _weekly_codes(frame: pl.DataFrame, codes: Sequence[str] | None) -> Sequence[str]:
    return frame["weekly_code"].unique(maintain_order=True).to_list() if codes is None else codes


def _per_code(
    codes: Sequence[str],
    offenders: pl.DataFrame,
    judge_code: Callable[[str, pl.DataFrame], CheckOutcome],
) -> Outcomes:
    """One check's outcome for each of ``codes``, from the offenders of all of them found in
    one pass (a ranged run audits its codes together: per-code passes cost more than the
    checks' arithmetic), each code judged on its own offenders only (in ``offenders``'
    order)."""
    by_code = {
        key: rows for (key,), rows in offenders.partition_by("weekly_code", as_dict=True).items()
    }
    none = offenders.clear()
    return {code: judge_code(code, by_code.get(code, none)) for code in codes}


def _rule_check(
    frame: pl.DataFrame, rules: tuple[Rule, ...], what: str, codes: Sequence[str] | None
) -> Outcomes:
    """Rows breaking any of ``rules``, first in file and row order, as validation reports them,
    per weekly code."""
    offenders = _located(judge(frame, rules).filter(pl.col("column").is_not_null()))
    offenders = offenders.sort("_file", "_row", nulls_last=True)

    def outcome(code: str, rows: pl.DataFrame) -> CheckOutcome:
        return _outcome(
            passed=rows.is_empty(),
            description=f"{rows.height} rows with {what}" if rows.height else f"no {what}",
            offenders=rows,
            metadata={"violations": rows.height},
        )

    return _per_code(_weekly_codes(frame, codes), offenders, outcome)


DUPLICATE_KEY = Rule(
    "ts",
    pl.len().over(RAW_KEY) > 1,
    pl.format(
        "quote for ({}, {}, {}) is one of {} with that key: the key must be unique",
        pl.col("weekly_code"),
        pl.col("option_symbol"),
        pl.col("ts").cast(pl.String),
        pl.len().over(RAW_KEY),
    ),
)


def unique_keys(frame: pl.DataFrame, codes: Sequence[str] | None = None) -> Outcomes:
    """Every copy of a duplicated key counts (validation keeps the first and refuses the rest;
    a staged duplicate came by another path, and no copy is known to be the right one).

    Like every row check here: the outcome of each weekly code of ``frame`` (or of ``codes``,
    which may name codes without rows: they pass)."""
    return _rule_check(frame, (DUPLICATE_KEY,), "duplicate (weekly_code, option_symbol, ts)", codes)


def bid_le_ask(frame: pl.DataFrame, codes: Sequence[str] | None = None) -> Outcomes:
    return _rule_check(frame, (CROSSED_QUOTE,), "bid > ask", codes)


def non_negative_prices(frame: pl.DataFrame, codes: Sequence[str] | None = None) -> Outcomes:
    rules = (*NON_POSITIVE, *NEGATIVE_PRICE)
    return _rule_check(frame, rules, "negative prices or non-positive strike/underlying", codes)


def within_contract_life(frame: pl.DataFrame, codes: Sequence[str] | None = None) -> Outcomes:
    return _rule_check(frame, (AFTER_EXPIRY,), "quotes after expiry", codes)


def schema_matches(actual: dict[str, str], expected: dict[str, str], *, table: str) -> CheckOutcome:
    """Compare a (staged) table's ``DESCRIBE`` types with the contract's; an offender is a
    column of ``table``."""
    problems = {
        col: f"expected {typ}, found {actual.get(col, 'nothing')}"
        for col, typ in expected.items()
        if actual.get(col) != typ
    }
    offenders = pl.DataFrame(
        {
            "_file": [f"table {table}"] * len(problems),
            "_row": pl.Series([None] * len(problems), dtype=pl.Int64),
            "column": list(problems),
            "reason": list(problems.values()),
        },
        schema={"_file": pl.String, "_row": pl.Int64, "column": pl.String, "reason": pl.String},
    )
    return _outcome(
        passed=not problems,
        description="schema matches the contract" if not problems else f"schema drift: {problems}",
        offenders=offenders,
        metadata={"columns": len(actual), "problems": problems},
    )


def _round(col: str) -> pl.Expr:
    """A computed price for a message: six significant digits, not float noise."""
    return pl.col(col).round_sig_figs(6).cast(pl.String)


def _with_static_bounds(frame: pl.DataFrame) -> pl.DataFrame:
    """Each quote's mid, half-spread and static bounds: the discounted intrinsic value below,
    e^{-rτ}F (call) or e^{-rτ}K (put) above."""
    f = frame.with_columns(
        _mid=(pl.col("bid") + pl.col("ask")) / 2,
        _half=(pl.col("ask") - pl.col("bid")) / 2,
        _tau=((pl.col("expiry") - pl.col("ts")).dt.total_microseconds() / 1e6 / SECONDS_PER_YEAR),
    )
    f = f.with_columns(
        _df=(-pl.col("rate") * pl.col("_tau")).exp(),
        _fwd=pl.when(pl.col("underlying_kind") == "future")
        .then(pl.col("underlying_price"))
        .otherwise(
            pl.col("underlying_price")
            * ((pl.col("rate") - pl.col("dividend_yield")) * pl.col("_tau")).exp()
        ),
    )
    is_call = pl.col("option_type") == "C"
    sign = pl.when(is_call).then(1.0).otherwise(-1.0)
    return f.with_columns(
        _lower=pl.col("_df") * (sign * (pl.col("_fwd") - pl.col("strike"))).clip(lower_bound=0.0),
        _upper=pl.col("_df") * pl.when(is_call).then(pl.col("_fwd")).otherwise(pl.col("strike")),
    )


_OFFENDER_COLUMNS = ["weekly_code", "_file", "_row", "column", "reason", "_excess"]


def static_no_arbitrage(
    frame: pl.DataFrame, max_violation_rate: float, codes: Sequence[str] | None = None
) -> Outcomes:
    """Mids inside the static bounds and monotone in strike, each within the quoted spread.

    Bounds: discounted intrinsic ≤ price ≤ e^{-rτ}F (call) or e^{-rτ}K (put). In strike, at
    each timestamp, call mids must not rise and put mids must not fall by more than the two
    half-spreads. Real books hold a few stale quotes, so the check fails (and blocks) only
    above ``max_violation_rate``; below it, any violation is a warning. Validation refuses
    prices far above the bounds at parse time; what is left here is the quotes near them.

    Offending rows, worst (furthest outside, in price) first: the ask of a quote entirely
    below its intrinsic value, the bid of one entirely above its bound, and the bid of the
    quote that breaks monotonicity by being dearer than its neighbour (a call than the call
    one strike below, a put than the put one strike above).
    """
    f = _with_static_bounds(frame.filter(pl.col("ask") > 0))
    below = pl.col("_mid") + pl.col("_half") < pl.col("_lower") - PRICE_EPS
    above = pl.col("_mid") - pl.col("_half") > pl.col("_upper") + PRICE_EPS
    bounds = _located(f.filter(below | above)).with_columns(
        column=pl.when(below).then(pl.lit("ask")).otherwise(pl.lit("bid")),
        reason=pl.when(below)
        .then(
            pl.format(
                "ask {} is below the discounted intrinsic value {}",
                pl.col("ask").cast(pl.String),
                _round("_lower"),
            )
        )
        .otherwise(
            pl.format(
                "bid {} is above the static upper bound {} (e^-rτ·{})",
                pl.col("bid").cast(pl.String),
                _round("_upper"),
                pl.when(pl.col("option_type") == "C").then(pl.lit("F")).otherwise(pl.lit("K")),
            )
        ),
        _excess=pl.when(below)
        .then(pl.col("_lower") - pl.col("ask"))
        .otherwise(pl.col("bid") - pl.col("_upper")),
    )
    group = ["weekly_code", "ts", "option_type"]
    is_call = pl.col("option_type") == "C"

    def neighbour(col: str) -> pl.Expr:
        return (
            pl.when(is_call)
            .then(pl.col(col).shift(1).over(group))
            .otherwise(pl.col(col).shift(-1).over(group))
        )

    ordered = f.sort([*group, "strike"]).with_columns(
        _rise=pl.col("_mid") - neighbour("_mid"),
        _slack=pl.col("_half") + neighbour("_half"),
        _nb_strike=neighbour("strike"),
        _nb_mid=neighbour("_mid"),
    )
    mono = _located(
        ordered.filter((pl.col("_rise") > pl.col("_slack") + PRICE_EPS).fill_null(False))
    ).with_columns(
        column=pl.lit("bid"),
        reason=pl.format(
            "{} mid {} at strike {} is above the mid {} at strike {} by more than the two "
            "half-spreads {}: prices must not move that way in strike",
            pl.when(is_call).then(pl.lit("call")).otherwise(pl.lit("put")),
            _round("_mid"),
            pl.col("strike").cast(pl.String),
            _round("_nb_mid"),
            pl.col("_nb_strike").cast(pl.String),
            _round("_slack"),
        ),
        _excess=pl.col("_rise") - pl.col("_slack"),
    )
    # A quote both outside its bounds and dearer than its neighbour is one offending row,
    # named once, by its worse problem.
    offenders = (
        pl.concat([bounds.select(_OFFENDER_COLUMNS), mono.select(_OFFENDER_COLUMNS)])
        .sort("_excess", descending=True)
        .unique(["weekly_code", "_file", "_row"], keep="first", maintain_order=True)
    )
    quoted = _counts(f)
    n_bounds, n_mono = _counts(bounds), _counts(mono)

    def outcome(code: str, rows: pl.DataFrame) -> CheckOutcome:
        b, m, n = n_bounds.get(code, 0), n_mono.get(code, 0), quoted.get(code, 0)
        rate = (b + m) / max(n, 1)
        passed = rate <= max_violation_rate
        return _outcome(
            passed=passed,
            severity="ERROR" if not passed else "WARN",
            description=(
                f"{b} quotes outside the static bounds and {m} strike-monotonicity "
                f"breaks in {n} quotes (rate {rate:.4%}, limit {max_violation_rate:.4%})"
            ),
            offenders=rows,
            metadata={
                "bound_violations": b,
                "monotonicity_violations": m,
                "violation_rate": rate,
                "max_violation_rate": max_violation_rate,
            },
        )

    return _per_code(_weekly_codes(frame, codes), offenders, outcome)


def _counts(frame: pl.DataFrame) -> dict[str, int]:
    """Rows of each weekly code of ``frame``."""
    return dict(frame.group_by("weekly_code").len().iter_rows())


def iv_solve_rates(features: pl.DataFrame, floor: float) -> Outcomes:
    """Per weekly code of ``features``: the share of its quoted, unexpired rows whose IV
    solved; ``no_quote`` and ``expired`` rows are not failures of the solver and are reported
    separately. One pass over every code of a range (the features step audits a range at
    once), each code judged on its own rows only.

    An unsolved row's mid lies outside the static bounds (``quant.implied_vol``'s statuses).
    Offenders, furthest outside first, name the side of the quote that is outside with it:
    the bid of a mid below intrinsic (bid ≤ mid), the ask of a mid at or above the bound.
    """
    status = pl.col("iv_status")
    is_quoted = ~status.is_in(["no_quote", "expired"])
    counts = features.group_by("weekly_code", maintain_order=True).agg(
        quoted=is_quoted.sum(), solved=(status == "ok").sum()
    )
    below = status == "below_intrinsic"
    offenders = (
        _located(_with_static_bounds(features.filter(is_quoted & (status != "ok"))))
        .with_columns(
            column=pl.when(below).then(pl.lit("bid")).otherwise(pl.lit("ask")),
            reason=pl.format(
                "mid {} of bid {} and ask {} is {} {}: no implied vol ({})",
                _round("_mid"),
                pl.col("bid").cast(pl.String),
                pl.col("ask").cast(pl.String),
                pl.when(below)
                .then(pl.lit("below the discounted intrinsic value"))
                .otherwise(pl.lit("at or above the static upper bound")),
                pl.when(below).then(_round("_lower")).otherwise(_round("_upper")),
                status,
            ),
            _excess=pl.when(below)
            .then(pl.col("_lower") - pl.col("_mid"))
            .otherwise(pl.col("_mid") - pl.col("_upper")),
        )
        .sort("_excess", descending=True, maintain_order=True)
    )
    tallies = {code: (quoted, solved) for code, quoted, solved in counts.iter_rows()}

    def outcome(code: str, rows: pl.DataFrame) -> CheckOutcome:
        quoted, solved = tallies[code]
        rate = solved / quoted if quoted else 0.0
        return _outcome(
            passed=rate >= floor,
            description=f"IV solved for {rate:.2%} of {quoted} quoted rows (floor {floor:.2%})",
            offenders=rows,
            metadata={"solve_rate": rate, "floor": floor, "quoted_rows": quoted},
        )

    return _per_code(list(tallies), offenders, outcome)


def _duckdb_types(schema: Mapping[str, pl.DataType]) -> dict[str, str]:
    return {col: DUCKDB_TYPES[dtype] for col, dtype in schema.items()}


def audit_raw(
    staged: pl.DataFrame,
    types: dict[str, str],
    max_violation_rate: float,
    codes: Sequence[str] | None = None,
) -> dict[str, dict[str, CheckOutcome]]:
    """``RAW_CHECKS`` of each weekly code of a staged ``raw_option_chains`` range (its rows
    with lineage, and the DuckDB types of its columns: one staging for the range, so one
    schema outcome shared by its codes); ``codes`` names them where some staged no rows."""
    codes = _weekly_codes(staged, codes)
    schema = schema_matches(types, _duckdb_types(RAW_SCHEMA), table="raw_option_chains")
    checks = {
        "unique_keys": unique_keys(staged, codes),
        "bid_le_ask": bid_le_ask(staged, codes),
        "non_negative_prices": non_negative_prices(staged, codes),
        "within_contract_life": within_contract_life(staged, codes),
        "static_no_arbitrage": static_no_arbitrage(staged, max_violation_rate, codes),
    }
    return {
        code: {
            name: schema if name == "schema_and_types" else checks[name][code]
            for name in RAW_CHECKS
        }
        for code in codes
    }


def audit_features(
    staged: pl.DataFrame,
    types: dict[str, str],
    contract: Mapping[str, pl.DataType],
    lineage: pl.DataFrame,
    floor: float,
) -> dict[str, dict[str, CheckOutcome]]:
    """``FEATURE_CHECKS`` of each weekly code of a staged ``greeks_features`` range: the
    staged types against those of the frame ``compute_features`` made (``contract``; one
    staging for the range, so one outcome shared by its codes), and each code's IV solve
    rate, offenders located through the published ``raw_lineage`` of their raw rows."""
    located = staged.join(lineage.select(*RAW_KEY, *LINEAGE_COLUMNS), on=RAW_KEY, how="left")
    schema = schema_matches(types, _duckdb_types(contract), table="greeks_features")
    return {
        code: {"schema_and_types": schema, "iv_solve_rate": rates}
        for code, rates in iv_solve_rates(located, floor).items()
    }


def all_passed(outcomes: dict[str, CheckOutcome]) -> bool:
    """Whether a staged partition may be published: every (blocking) check passed."""
    return all(outcome.passed for outcome in outcomes.values())


def audit_failure(table: str, weekly_code: str, outcomes: dict[str, CheckOutcome]) -> str | None:
    """The message of a run whose staged partition failed a check (None if all passed): the
    failed checks, and under each its worst offenders in the form of a parse error."""
    failed = {name: outcome for name, outcome in outcomes.items() if not outcome.passed}
    if not failed:
        return None
    lines = [
        f"{table} {weekly_code!r} not published: blocking check(s) {', '.join(failed)} failed "
        f"on the staged rows; the published tables are unchanged"
    ]
    for name, outcome in failed.items():
        lines.append(f"{name}: {outcome.description}")
        lines += [f"  {error}" for error in outcome.worst]
    return "\n".join(lines)


def combined(by_code: Mapping[str, CheckOutcome]) -> CheckOutcome:
    """One check's outcome over the codes of a ranged run (``BackfillPolicy.multi_run``): a
    Dagster check result has no partition, so the run records one per check, passed only if
    it passed on every code, its severity the worst, each code's description in its metadata
    (a run's range is at most ``MARKET_DATA_CODES_PER_RUN`` codes) and the failed codes' worst
    offenders.

    >>> ok = CheckOutcome(True, "0 of 12 rows")
    >>> bad = CheckOutcome(False, "3 of 9 rows")
    >>> both = combined({"A": ok, "B": bad})
    >>> both.passed, both.description
    (False, 'failed on 1 of 2 weekly codes: B')
    >>> combined({"A": ok, "C": ok}).metadata
    {'by_code': {'A': '0 of 12 rows', 'C': '0 of 12 rows'}, 'worst_offenders': []}
    """
    failed = [code for code, outcome in by_code.items() if not outcome.passed]
    description = (
        f"failed on {len(failed)} of {len(by_code)} weekly codes: {', '.join(failed)}"
        if failed
        else f"passed on each of {len(by_code)} weekly codes"
    )
    severity = "ERROR" if any(o.severity == "ERROR" for o in by_code.values()) else "WARN"
    worst = tuple(error for code in failed for error in by_code[code].worst)
    return CheckOutcome(
        passed=not failed,
        description=description,
        severity=severity,
        metadata={
            "by_code": {code: o.description for code, o in by_code.items()},
            "worst_offenders": [str(error) for error in worst],
        },
        worst=worst,
    )
