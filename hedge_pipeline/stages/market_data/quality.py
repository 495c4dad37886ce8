"""Data-quality checks on a stored weekly-code partition (the asset checks' logic).

Ingest validation (``market_data.validation``) already refuses bad rows; these checks re-verify
what is actually in the warehouse, so data written by any other path is caught too, and add
the checks that need a whole cross-section: static no-arbitrage bounds and monotonicity in
strike at each timestamp, and the implied-vol solve rate.

Each check returns a ``CheckOutcome``; the Dagster layer turns it into an ``AssetCheckResult``.
A failed check with severity ``ERROR`` blocks downstream assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from hedge_pipeline.quant.daycount import SECONDS_PER_YEAR
from hedge_pipeline.tables.schema import RAW_KEY

# Prices are compared with this absolute slack so that float rounding is never a violation.
PRICE_EPS = 1e-9


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    severity: Literal["ERROR", "WARN"] = "ERROR"
    metadata: dict[str, Any] = field(default_factory=dict)


def _count_check(frame: pl.DataFrame, bad: pl.Expr, what: str) -> CheckOutcome:
    offenders = frame.filter(bad)
    sample = offenders.head(5).select(RAW_KEY).rows()
    return CheckOutcome(
        passed=offenders.is_empty(),
        description=f"{offenders.height} rows with {what}" if offenders.height else f"no {what}",
        metadata={"violations": offenders.height, "sample": [list(map(str, r)) for r in sample]},
    )


def unique_keys(frame: pl.DataFrame) -> CheckOutcome:
    return _count_check(
        frame, pl.len().over(RAW_KEY) > 1, "duplicate (weekly_code, option_symbol, ts)"
    )


def bid_le_ask(frame: pl.DataFrame) -> CheckOutcome:
    return _count_check(frame, pl.col("bid") > pl.col("ask"), "bid > ask")


def non_negative_prices(frame: pl.DataFrame) -> CheckOutcome:
    bad = (pl.col("bid") < 0) | (pl.col("ask") < 0) | (pl.col("last") < 0).fill_null(False)
    bad = bad | (pl.col("underlying_price") <= 0) | (pl.col("strike") <= 0)
    return _count_check(frame, bad, "negative prices or non-positive strike/underlying")


def within_contract_life(frame: pl.DataFrame) -> CheckOutcome:
    return _count_check(frame, pl.col("ts") > pl.col("expiry"), "quotes after expiry")


def schema_matches(actual: dict[str, str], expected: dict[str, str]) -> CheckOutcome:
    """Compare a table's ``DESCRIBE`` types with the contract's."""
    problems = {
        col: f"expected {typ}, found {actual.get(col, 'nothing')}"
        for col, typ in expected.items()
        if actual.get(col) != typ
    }
    return CheckOutcome(
        passed=not problems,
        description="schema matches the contract" if not problems else f"schema drift: {problems}",
        metadata={"columns": len(actual), "problems": problems},
    )


def static_no_arbitrage(frame: pl.DataFrame, max_violation_rate: float) -> CheckOutcome:
    """Mids inside the static bounds and monotone in strike, each within the quoted spread.

    Bounds: discounted intrinsic ≤ price ≤ e^{-rτ}F (call) or e^{-rτ}K (put). In strike, at
    each timestamp, call mids must not rise and put mids must not fall by more than the two
    half-spreads. Real books hold a few stale quotes, so the check fails (and blocks) only
    above ``max_violation_rate``; below it, any violation is a warning.
    """
    f = frame.filter(pl.col("ask") > 0).with_columns(
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
    lower = pl.col("_df") * (sign * (pl.col("_fwd") - pl.col("strike"))).clip(lower_bound=0.0)
    upper = pl.col("_df") * pl.when(is_call).then(pl.col("_fwd")).otherwise(pl.col("strike"))
    bounds_bad = (pl.col("_mid") + pl.col("_half") < lower - PRICE_EPS) | (
        pl.col("_mid") - pl.col("_half") > upper + PRICE_EPS
    )
    group = ["weekly_code", "ts", "option_type"]
    ordered = f.sort([*group, "strike"]).with_columns(
        _rise=sign * (pl.col("_mid").shift(-1).over(group) - pl.col("_mid")),
        _slack=pl.col("_half") + pl.col("_half").shift(-1).over(group),
    )
    mono_bad = (ordered["_rise"] > ordered["_slack"] + PRICE_EPS).fill_null(False)
    n_bounds = int(f.select(bounds_bad.sum()).item())
    n_mono = int(mono_bad.sum())
    rate = (n_bounds + n_mono) / max(f.height, 1)
    passed = rate <= max_violation_rate
    return CheckOutcome(
        passed=passed,
        severity="ERROR" if not passed else "WARN",
        description=(
            f"{n_bounds} quotes outside the static bounds and {n_mono} strike-monotonicity "
            f"breaks in {f.height} quotes (rate {rate:.4%}, limit {max_violation_rate:.4%})"
        ),
        metadata={
            "bound_violations": n_bounds,
            "monotonicity_violations": n_mono,
            "violation_rate": rate,
            "max_violation_rate": max_violation_rate,
        },
    )


def iv_solve_rate(features: pl.DataFrame, floor: float) -> CheckOutcome:
    """Share of quoted, unexpired rows whose IV solved; ``no_quote`` and ``expired`` rows are
    not failures of the solver and are reported separately."""
    quoted = features.filter(~pl.col("iv_status").is_in(["no_quote", "expired"]))
    solved = quoted.filter(pl.col("iv_status") == "ok").height
    rate = solved / quoted.height if quoted.height else 0.0
    return CheckOutcome(
        passed=rate >= floor,
        description=f"IV solved for {rate:.2%} of {quoted.height} quoted rows (floor {floor:.2%})",
        metadata={"solve_rate": rate, "floor": floor, "quoted_rows": quoted.height},
    )
