"""From raw quotes to the ``greeks_features`` table (docs/design.md §3).

Per quote: mid, spread, tau (ACT/365), the forward, log-moneyness ln(K/F), implied vol solved
from the mid and the Greeks at that vol (Black-76 for futures, BSM otherwise). Per timestamp
of the weekly code, the market features the models read: the underlying's log return, its
realized vol over the last session, ATM implied vol and the smile's slope.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from hedge_pipeline.quant.daycount import SECONDS_PER_YEAR
from hedge_pipeline.quant.implied_vol import STATUSES, implied_vol_codes
from hedge_pipeline.quant.pricing import bs_greeks

# Realized vol looks back over one session of 5-minute bars; fewer than an hour of returns
# gives no estimate rather than a noisy one. Daily bars (a history) need a week of returns:
# twelve would leave a four-week code (20 bars) eight bars with an estimate.
REALIZED_VOL_WINDOW = 75
REALIZED_VOL_MIN_BARS = 12
REALIZED_VOL_MIN_DAILY_BARS = 5
_INTRADAY = 6 * 3600  # seconds: a median gap between bars longer than this is daily data
# The smile's slope is fitted on quotes within two ATM standard deviations of the money.
SKEW_FIT_STD = 2.0

GREEK_COLUMNS = ("delta", "gamma", "vega", "theta", "rho")
_OK = STATUSES.index("ok")
_STATUS_NAMES = pl.Series("iv_status", STATUSES, dtype=pl.String)


def compute_features(raw: pl.DataFrame) -> pl.DataFrame:
    """Features of one or more weekly codes' raw rows (canonical columns, UTC timestamps),
    in key order whatever the order of ``raw``: the per-bar aggregates then sum in the same
    order, so the same rows give the same bits (and content hash) however they were read."""
    quotes = (
        raw.sort("weekly_code", "option_symbol", "ts")
        .with_columns(
            mid=(pl.col("bid") + pl.col("ask")) / 2.0,
            spread=pl.col("ask") - pl.col("bid"),
            tau=(pl.col("expiry") - pl.col("ts")).dt.total_microseconds() / 1e6 / SECONDS_PER_YEAR,
        )
        .with_columns(
            forward=pl.when(pl.col("underlying_kind") == "future")
            .then(pl.col("underlying_price"))
            .otherwise(
                pl.col("underlying_price")
                * ((pl.col("rate") - pl.col("dividend_yield")) * pl.col("tau")).exp()
            ),
        )
    )
    quotes = quotes.with_columns(log_moneyness=(pl.col("strike") / pl.col("forward")).log())
    quotes = _with_iv_and_greeks(quotes)
    return _with_market_features(quotes)


def _with_iv_and_greeks(quotes: pl.DataFrame) -> pl.DataFrame:
    """Implied vol from the mid and the Greeks at it, one solve over the whole frame (every
    code and timestamp at once: the kernels are vectorized), unsolved rows' values null.

    The columns go from NumPy to Polars without a detour: NaN becomes null as the Series is
    built and the status comes as an index into ``STATUSES``, not as NumPy strings (whose
    conversion cost as much as the solve)."""
    args = dict(
        spot=quotes["underlying_price"].to_numpy(),
        strike=quotes["strike"].to_numpy(),
        tau=quotes["tau"].to_numpy(),
        rate=quotes["rate"].to_numpy(),
        dividend=quotes["dividend_yield"].to_numpy(),
        is_call=(quotes["option_type"] == "C").to_numpy(),
        futures=(quotes["underlying_kind"] == "future").to_numpy(),
    )
    iv, code = implied_vol_codes(quotes["mid"].to_numpy(), **args)
    ok = code == _OK
    greeks = bs_greeks(vol=np.where(ok, iv, 0.0), **args)
    return quotes.with_columns(
        pl.Series("iv", iv, dtype=pl.Float64, nan_to_null=True),
        _STATUS_NAMES.gather(code.astype(np.uint32)).alias("iv_status"),
        *(
            pl.Series(k, np.where(ok, greeks[k], np.nan), dtype=pl.Float64, nan_to_null=True)
            for k in GREEK_COLUMNS
        ),
    )


def _realized_vol_min_bars() -> pl.Expr:
    """Returns a realized vol needs before it is given, per weekly code of the bars' frame
    (one row per code and bar, sorted): an hour of 5-minute bars, a week of daily ones (the
    median gap between the code's bars decides). Per code, so that a frame of many codes
    gets each code's features exactly as that code alone would (the features step computes
    a whole range of codes at once)."""
    gap = pl.col("ts").diff().dt.total_seconds().median().over("weekly_code")
    daily = gap.is_not_null() & (gap > _INTRADAY)
    return pl.when(daily).then(REALIZED_VOL_MIN_DAILY_BARS).otherwise(REALIZED_VOL_MIN_BARS)


def _with_market_features(quotes: pl.DataFrame) -> pl.DataFrame:
    # The realized vol sums the squared returns of the window, and is given once the window
    # holds the code's minimum of returns (``rolling_sum``'s ``min_samples`` counts them, but
    # takes one number for every code).
    returns = pl.col("underlying_log_return")
    underlying = (
        quotes.group_by("weekly_code", "ts")
        .agg(pl.col("underlying_price").first())
        .sort("weekly_code", "ts")
        .with_columns(
            underlying_log_return=pl.col("underlying_price").log().diff().over("weekly_code"),
            _min_bars=_realized_vol_min_bars(),
        )
        .with_columns(
            _sum_r2=(returns**2)
            .rolling_sum(REALIZED_VOL_WINDOW, min_samples=1)
            .over("weekly_code"),
            _n=returns.is_not_null()
            .cast(pl.Int32)
            .rolling_sum(REALIZED_VOL_WINDOW, min_samples=1)
            .over("weekly_code"),
            _elapsed=(pl.col("ts") - pl.col("ts").shift(REALIZED_VOL_WINDOW).over("weekly_code"))
            .fill_null(pl.col("ts") - pl.col("ts").first().over("weekly_code"))
            .dt.total_microseconds()
            / 1e6
            / SECONDS_PER_YEAR,
        )
        .select(
            "weekly_code",
            "ts",
            "underlying_log_return",
            realized_vol=pl.when(pl.col("_n") >= pl.col("_min_bars")).then(
                (pl.col("_sum_r2") / pl.col("_elapsed")).sqrt()
            ),
        )
    )
    ok = quotes.filter(pl.col("iv_status") == "ok").select(
        "weekly_code", "ts", "log_moneyness", "iv", "tau"
    )
    atm = (
        ok.with_columns(_dist=pl.col("log_moneyness").abs())
        .filter(pl.col("_dist") == pl.col("_dist").min().over("weekly_code", "ts"))
        .group_by("weekly_code", "ts")
        .agg(atm_iv=pl.col("iv").mean())
    )
    skew = (
        ok.join(atm, on=["weekly_code", "ts"])
        .with_columns(_x=pl.col("log_moneyness") / (pl.col("atm_iv") * pl.col("tau").sqrt()))
        .filter(pl.col("_x").abs() <= SKEW_FIT_STD)
        .group_by("weekly_code", "ts")
        .agg(iv_skew=pl.cov("_x", "iv") / pl.col("_x").var())
    )
    # Every per-bar feature on the bars first (a few rows per code), then one join onto the
    # quotes, which keeps their key order.
    bars = underlying.join(atm, on=["weekly_code", "ts"], how="left").join(
        skew, on=["weekly_code", "ts"], how="left"
    )
    return quotes.join(
        bars, on=["weekly_code", "ts"], how="left", maintain_order="left"
    ).with_columns(
        std_moneyness=pl.col("log_moneyness") / (pl.col("atm_iv") * pl.col("tau").sqrt()),
        iv_skew=pl.col("iv_skew").fill_nan(None),
    )
