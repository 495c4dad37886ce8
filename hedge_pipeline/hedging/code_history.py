"""One weekly code, bar by bar: the prices a specialist replays and calibrates on.

``code_history`` turns the code's ``greeks_features`` rows and its ``portfolio_selection`` rows
into aligned arrays: the underlying, each book option's mid and implied vol (carried forward
over bars where it was not quoted), the ATM vol and skew, the split of every bar, the frozen
CNN-LSTM's latest forecast at or before each bar (never a later one) and, when the template
names one, the hedge option's mid, vol and half-spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from hedge_pipeline.hedging.simulator import Book, Instrument
from hedge_pipeline.quant.daycount import SECONDS_PER_YEAR

__all__ = ["SPLITS", "CodeHistory", "CodeMarketError", "code_history"]

SPLITS = ("train", "val", "test")


class CodeMarketError(ValueError):
    """The code's data cannot make the requested episodes (the message says why)."""


@dataclass(frozen=True)
class CodeHistory:
    """One weekly code, bar by bar (arrays of one length T, sorted by time).

    ``iv`` and ``mid`` are (T, n_options) in the order of ``book``; ``split`` is 'train',
    'val', 'test' or '' (embargo bars between splits); forecasts are NaN before the first.
    """

    weekly_code: str
    book: Book
    symbols: tuple[str, ...]
    ts: np.ndarray
    years: np.ndarray  # calendar years since the first bar
    spot: np.ndarray
    tau: np.ndarray  # years to the book's expiry
    iv: np.ndarray
    mid: np.ndarray
    atm_iv: np.ndarray
    iv_skew: np.ndarray
    split: np.ndarray
    rv_forecast: np.ndarray
    rv_forecast_std: np.ndarray
    # The template's hedge option (delta-gamma), when it names one: its mid, implied vol and
    # half-spread (what one unit costs to trade) at every bar.
    instrument: Instrument | None = None
    instrument_symbol: str | None = None
    instrument_mid: np.ndarray | None = None
    instrument_iv: np.ndarray | None = None
    instrument_half_spread: np.ndarray | None = None

    def __len__(self) -> int:
        return self.ts.size


def code_history(
    features: pl.DataFrame, selection: pl.DataFrame, forecasts: pl.DataFrame | None = None
) -> CodeHistory:
    """The history of one code from its ``greeks_features`` rows and ``portfolio_selection``.

    Args:
        features: rows of the code's book options (at least ``ts, option_symbol,
            underlying_price, tau, mid, iv, iv_status, atm_iv, iv_skew``).
        selection: the code's ``portfolio_selection`` rows: ``weekly_code, option_symbol,
            option_type, strike, weight`` and the six split bounds, and optionally
            ``is_hedge_instrument`` (the hedge option's row, at most one).
        forecasts: ``ts, prediction, std`` of the CNN-LSTM's realized-vol forecast.

    Bars start once every book option has been quoted with an ok IV (before that a mark is
    unknown); later gaps carry the last quote forward.
    """
    codes = selection["weekly_code"].unique().to_list()
    if len(codes) != 1:
        raise CodeMarketError(f"a code market needs the selection of one weekly code, got {codes}")
    code = codes[0]
    if selection.is_empty():
        raise CodeMarketError(f"no option of {code} is selected")
    selection = selection.sort("option_symbol")
    hedge_rows = (
        selection.filter(pl.col("is_hedge_instrument"))
        if "is_hedge_instrument" in selection.columns
        else selection.clear()
    )
    if hedge_rows.height > 1:
        raise CodeMarketError(f"{code}: more than one hedge option selected")
    selection = selection.join(hedge_rows.select("option_symbol"), on="option_symbol", how="anti")
    symbols = tuple(selection["option_symbol"])
    hedge_symbol = hedge_rows["option_symbol"][0] if hedge_rows.height else None
    book = Book(
        strikes=tuple(selection["strike"]),
        is_call=tuple(t == "C" for t in selection["option_type"]),
        weights=tuple(selection["weight"]),
    )
    quoted = [*symbols, *([hedge_symbol] if hedge_symbol else [])]
    rows = features.filter(pl.col("option_symbol").is_in(quoted))
    missing = sorted(set(quoted) - set(rows["option_symbol"].unique()))
    if missing:
        raise CodeMarketError(f"{code}: no greeks_features rows for selected options {missing}")
    bars = _bars(rows, tuple(quoted))
    bars = _with_split(bars, selection.row(0, named=True)).pipe(_with_forecasts, forecasts)
    iv = bars.select(f"iv_{s}" for s in symbols).to_numpy()
    mid = bars.select(f"mid_{s}" for s in symbols).to_numpy()
    ts = bars["ts"]
    years = (ts - ts[0]).dt.total_microseconds().to_numpy() / 1e6 / SECONDS_PER_YEAR
    hedge: dict = {}
    if hedge_symbol:
        row = hedge_rows.row(0, named=True)
        hedge = {
            "instrument": Instrument(strike=row["strike"], is_call=row["option_type"] == "C"),
            "instrument_symbol": hedge_symbol,
            "instrument_mid": bars[f"mid_{hedge_symbol}"].to_numpy(),
            "instrument_iv": bars[f"iv_{hedge_symbol}"].to_numpy(),
            "instrument_half_spread": bars[f"spread_{hedge_symbol}"].to_numpy() / 2.0,
        }
    return CodeHistory(
        weekly_code=code,
        book=book,
        symbols=symbols,
        ts=ts.to_numpy(),
        years=years,
        spot=bars["underlying_price"].to_numpy(),
        tau=bars["tau"].to_numpy(),
        iv=iv,
        mid=mid,
        atm_iv=bars["atm_iv"].to_numpy(),
        iv_skew=bars["iv_skew"].to_numpy(),
        split=bars["split"].to_numpy(),
        rv_forecast=bars["rv_forecast"].to_numpy(),
        rv_forecast_std=bars["rv_forecast_std"].to_numpy(),
        **hedge,
    )


def _bars(rows: pl.DataFrame, symbols: tuple[str, ...]) -> pl.DataFrame:
    """One row per bar: market columns, then iv/mid/spread of each option, carried forward."""
    ok = rows.with_columns(
        pl.when(pl.col("iv_status") == "ok").then(pl.col(c)).alias(c)
        for c in ("iv", "mid", "spread")
    )
    market = ok.group_by("ts").agg(
        pl.col("underlying_price", "tau").first(),
        pl.col("atm_iv", "iv_skew").drop_nulls().drop_nans().first(),
    )
    wide = ok.pivot(on="option_symbol", index="ts", values=["iv", "mid", "spread"])
    # pivot names the columns iv_<symbol>, mid_<symbol>, … when it pivots several values
    columns = [f"{v}_{s}" for v in ("iv", "mid", "spread") for s in symbols]
    bars = (
        market.join(wide, on="ts", how="left")
        .sort("ts")
        .with_columns(pl.col("atm_iv", "iv_skew", *columns).forward_fill())
        .drop_nulls(["underlying_price", "tau", "atm_iv", "iv_skew", *columns])
    )
    if bars.is_empty():
        raise CodeMarketError("no bar quotes every selected option with an ok implied vol")
    return bars


def _with_split(bars: pl.DataFrame, bounds: dict) -> pl.DataFrame:
    ts = pl.col("ts")
    label = pl.lit("")
    for split in reversed(SPLITS):
        start, end = bounds[f"{split}_start"], bounds[f"{split}_end"]
        label = (
            pl.when(ts.is_between(_like(bars, start), _like(bars, end)))
            .then(pl.lit(split))
            .otherwise(label)
        )
    return bars.with_columns(split=label)


def _like(bars: pl.DataFrame, value) -> pl.Expr:
    """A bound as a literal of the bars' timestamp type (naive or UTC alike)."""
    return pl.lit(value).cast(bars.schema["ts"])


def _with_forecasts(bars: pl.DataFrame, forecasts: pl.DataFrame | None) -> pl.DataFrame:
    if forecasts is None or forecasts.is_empty():
        return bars.with_columns(rv_forecast=pl.lit(math.nan), rv_forecast_std=pl.lit(math.nan))
    latest = (
        forecasts.select(
            pl.col("ts").cast(bars.schema["ts"]),
            rv_forecast=pl.col("prediction").cast(pl.Float64),
            rv_forecast_std=pl.col("std").cast(pl.Float64),
        )
        .sort("ts")
        .unique("ts", keep="last", maintain_order=True)
    )
    return bars.join_asof(latest, on="ts", strategy="backward").with_columns(
        pl.col("rv_forecast", "rv_forecast_std").fill_null(math.nan)
    )
