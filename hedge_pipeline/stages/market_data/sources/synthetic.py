"""The ``synthetic`` source: a seeded stand-in for the weekly futures-option books researchers hold.

What the data holds (seed 7, the default):

* 8 weekly codes, ``3CN5 3IN5 3MN5 3WN5 3XN5 3YN5 3ZN5 3SN5``, all options on one futures
  contract, ``FUTN5`` (``underlying_kind='future'``, starting at 110.00, priced with Black-76,
  rate 4.5%, no dividend yield).
* 277 options: per code 17 puts and 17 calls on a 0.5-wide strike ladder centred on the
  futures price of the code's first day, plus one more out-of-the-money call in 3IN5, 3WN5,
  3XN5, 3ZN5 and 3SN5. Symbols are ``schema.option_symbol``'s, e.g. ``3CN5_C111.5``.
* Expiries one week apart: code i expires on the i-th Friday from 2 May 2025 (3CN5) to
  20 June 2025 (3SN5), at the session close, 19:45 UTC.
* 5-minute snapshots over each code's last four weeks: 20 weekdays × 75 bars (13:30 to
  19:40 UTC, a 6¼-hour session; no holiday calendar), so at most 1,500 quotes per option,
  and 2025-04-07 to 2025-06-20 (55 weekdays, 4,125 bars) over all codes.
* 402,413 rows in all (49,397 to 50,930 per code): 3.1% of the 277 × 1,500 = 415,500
  possible quotes are missing, 1% near the money and up to 9% in the illiquid wings, plus
  whole-market outages of 2–6 bars (on about one day in five; 50 bars on 11 days).
* Futures tick 0.01, option tick 0.005; underlying between 96.42 and 113.86, at-the-money
  instantaneous vol between about 18% and 38% (seed 7).

How it is made: one Heston futures path (v0 = θ = 0.05, κ = 3, ξ = 0.5, ρ = −0.6, QE scheme on
the calendar clock, so overnight and weekend gaps carry their share of variance) drives every
code. Each quote's implied vol comes from ``market_sim.smile_iv`` (level from the current
variance, negative skew and curvature in standardized moneyness), its mid from Black-76, and
its half-spread from vega × an IV half-spread that widens away from the money and near
expiry, plus 0.2% of the price. Bids are rounded down and asks up to the 0.005 tick, and an ask
is raised where needed to keep the mid above the discounted intrinsic value, so every row
passes ``market_data.validation`` and the strike-monotonicity checks. ``last`` is a trade inside the
spread (null when the bar had none), ``volume`` the contracts traded in the bar (more near the
money), ``open_interest`` a daily series.

Reproducible: the same seed gives the same bytes. The shared path comes from its own random
stream and each code's quotes from a stream of their own (``SeedSequence`` children), so
loading one code alone gives exactly its rows in the full book.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import numpy as np
import polars as pl
from numpy.typing import NDArray

from hedge_pipeline.quant.market_sim import (
    FloatArray,
    HestonParams,
    SmileParams,
    simulate_heston,
    smile_iv,
    standardized_moneyness,
)
from hedge_pipeline.quant.pricing import bs_greeks
from hedge_pipeline.stages.market_data.sources.quoting import (
    bid_ask_ticks,
    half_spread,
    open_interest,
    trades,
)
from hedge_pipeline.tables.schema import (
    LINEAGE_COLUMNS,
    RAW_COLUMNS,
    UTC_TS,
    UnknownWeeklyCodeError,
    option_symbol,
)

# Bump whenever a change alters the generated rows: it is part of every fingerprint, so the
# new-codes sensor sees the data change.
GENERATOR_VERSION = "synthetic-1"

WEEKLY_CODES: tuple[str, ...] = ("3CN5", "3IN5", "3MN5", "3WN5", "3XN5", "3YN5", "3ZN5", "3SN5")
# Codes whose book lists one more out-of-the-money call: 8 × 34 + 5 = 277 options.
_EXTRA_CALL = frozenset({"3IN5", "3WN5", "3XN5", "3ZN5", "3SN5"})
STRIKES_PER_SIDE = 8  # strikes below and above the centre: 17 per option type
STRIKE_STEP = 0.5

UNDERLYING = "FUTN5"
FUTURES_START = 110.0
RATE = 0.045
HESTON = HestonParams(v0=0.05, theta=0.05, kappa=3.0, xi=0.5, rho=-0.6)
SMILE = SmileParams(wing=0.2, skew=-0.7)

# Prices are integers of ticks divided by these scales: an integer divided by an integer is
# the correctly rounded double, so the same tick count always gives the same bytes.
_OPTION_TICKS = 200  # tick 0.005
_FUTURES_TICKS = 100  # tick 0.01

FIRST_DAY = np.datetime64("2025-04-07", "D")  # a Monday: the first day of 3CN5's life
SESSION_OPEN = np.timedelta64(13 * 60 + 30, "m")  # 13:30 UTC (9:30 in New York in summer)
SESSION_CLOSE = np.timedelta64(19 * 60 + 45, "m")  # 19:45 UTC: the expiry time
BAR = np.timedelta64(5, "m")
BARS_PER_DAY = 75
LIFE_DAYS = 20  # each code is quoted over the four weeks up to its expiry
_N_DAYS = 5 * (len(WEEKLY_CODES) - 1) + LIFE_DAYS
_US_PER_YEAR = 365 * 86_400 * 1_000_000  # ACT/365, as the pipeline computes tau

# Gaps (see ``_published`` and ``simulate_market``; spreads and trades are ``quoting``'s).
_OUTAGE_PER_DAY = 0.2  # chance that a day has one whole-market outage
_OUTAGE_BARS = (2, 6)  # its length, in bars


@dataclass(frozen=True)
class SyntheticMarket:
    """The shared futures path, on the bar grid of all codes together (4,125 bars).

    ``futures`` is the quoted price (tick 0.01) and the price every option is valued at;
    ``variance`` is the instantaneous Heston variance behind the smile; ``outage`` marks bars
    at which the whole market published nothing.
    """

    ts: NDArray[np.datetime64]
    futures: NDArray[np.float64]
    variance: NDArray[np.float64]
    outage: NDArray[np.bool_]


def bar_grid() -> NDArray[np.datetime64]:
    """Every 5-minute snapshot of the span (UTC, microseconds): weekdays, 13:30 to 19:40."""
    weeks, weekdays = np.divmod(np.arange(_N_DAYS), 5)
    days = FIRST_DAY + 7 * weeks + weekdays
    bars = SESSION_OPEN + BAR * np.arange(BARS_PER_DAY)
    return (days[:, None] + bars[None, :]).ravel().astype("datetime64[us]")


def expiry(code: str) -> np.datetime64:
    """Expiry of a code: the Friday of week i (i = its position) at the session close."""
    first_friday = FIRST_DAY + 7 * (LIFE_DAYS // 5 - 1) + 4
    return (first_friday + 7 * WEEKLY_CODES.index(code) + SESSION_CLOSE).astype("datetime64[us]")


def fingerprint(seed: int, code: str) -> str:
    """Changes when, and only when, the rows of ``code`` change (version, seed, code)."""
    return hashlib.sha256(f"{GENERATOR_VERSION}|{seed}|{code}".encode()).hexdigest()


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent stream per purpose: (0,) the market, (1, i) the quotes of code i."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _years(delta: NDArray[np.timedelta64]) -> FloatArray:
    return delta.astype("timedelta64[us]").astype(np.int64) / _US_PER_YEAR


def simulate_market(seed: int) -> SyntheticMarket:
    """Simulate the shared path: the same for a seed whichever codes are asked for."""
    rng = _rng(seed, 0)
    ts = bar_grid()
    path = simulate_heston(FUTURES_START, HESTON, _years(ts - ts[0]), rng)
    futures = np.rint(path.price[0] * _FUTURES_TICKS) / _FUTURES_TICKS
    shortest, longest = _OUTAGE_BARS
    hit = rng.random(_N_DAYS) < _OUTAGE_PER_DAY
    start = rng.integers(0, BARS_PER_DAY - longest, _N_DAYS)
    length = rng.integers(shortest, longest + 1, _N_DAYS)
    bar = np.arange(BARS_PER_DAY)
    outage = hit[:, None] & (bar >= start[:, None]) & (bar < (start + length)[:, None])
    return SyntheticMarket(ts, futures, path.variance[0], outage.ravel())


def _book(code: str, centre_price: float) -> tuple[NDArray[np.bool_], FloatArray]:
    """(is_call, strike) of every option of a code: the ladder centred at the listing price."""
    centre = np.rint(centre_price / STRIKE_STEP) * STRIKE_STEP
    steps = np.arange(-STRIKES_PER_SIDE, STRIKES_PER_SIDE + 1)
    call_steps = np.arange(-STRIKES_PER_SIDE, STRIKES_PER_SIDE + 1 + (code in _EXTRA_CALL))
    is_call = np.concatenate([np.zeros(steps.size, bool), np.ones(call_steps.size, bool)])
    return is_call, centre + STRIKE_STEP * np.concatenate([steps, call_steps])


def _published(z: FloatArray, rng: np.random.Generator) -> NDArray[np.bool_]:
    """Which quotes reach the feed: 1% go missing near the money, up to 9% in the wings."""
    p_missing = 0.01 + 0.08 * np.clip((z - 1.5) / 3.0, 0.0, 1.0)
    return rng.random(z.shape) >= p_missing


def _quote_book(code: str, market: SyntheticMarket, rng: np.random.Generator) -> pl.DataFrame:
    """All quotes of one code as (option, bar) arrays, then the rows that were published."""
    first = WEEKLY_CODES.index(code) * 5 * BARS_PER_DAY
    window = slice(first, first + LIFE_DAYS * BARS_PER_DAY)
    ts, fut, var = market.ts[window], market.futures[window], market.variance[window]
    tau = _years(expiry(code) - ts)
    is_call, strikes = _book(code, fut[0])
    call, strike = is_call[:, None], strikes[:, None]

    log_m = np.log(strike / fut)
    iv = smile_iv(var, log_m, tau, HESTON, SMILE)
    greeks = bs_greeks(fut, strike, tau, iv, RATE, is_call=call, futures=True)
    z = np.abs(standardized_moneyness(var, log_m, tau, HESTON))
    intrinsic = np.exp(-RATE * tau) * np.maximum(np.where(call, fut - strike, strike - fut), 0.0)
    half = half_spread(greeks["price"], greeks["vega"], z, tau, rng)
    bid, ask = bid_ask_ticks(greeks["price"], half, intrinsic, _OPTION_TICKS)
    published = _published(z, rng) & ~market.outage[window]
    volume, last = trades(z, bid, ask, rng)
    interest = open_interest(z[:, 0], rng, LIFE_DAYS)

    option, bar = np.nonzero(published)
    types = np.where(is_call, "C", "P")
    symbols = [option_symbol(code, t, k) for t, k in zip(types, strikes.tolist(), strict=True)]
    return pl.DataFrame(
        {
            "ts": pl.Series(ts[bar]).dt.replace_time_zone("UTC"),
            "underlying_price": fut[bar],
            "option_symbol": pl.Series(symbols).gather(option),
            "option_type": types[option],
            "strike": strikes[option],
            "bid": bid[option, bar] / _OPTION_TICKS,
            "ask": ask[option, bar] / _OPTION_TICKS,
            "last": pl.Series(last[option, bar] / _OPTION_TICKS, nan_to_null=True),
            "volume": volume[option, bar].astype(np.int64),
            "open_interest": interest[option, bar // BARS_PER_DAY],
        }
    )


class SyntheticSource:
    """The default, offline ChainSource: a seeded market generator (see the module docstring).

    ``codes`` restricts the book to some of ``WEEKLY_CODES`` (smaller runs); the rows of a
    code do not depend on which others are held.
    """

    name = "synthetic"

    def __init__(self, seed: int = 7, codes: Sequence[str] | None = None) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        chosen = tuple(dict.fromkeys(WEEKLY_CODES if codes is None else codes))
        unknown = [c for c in chosen if c not in WEEKLY_CODES]
        if unknown:
            raise ValueError(f"unknown synthetic codes {unknown}; choose from {WEEKLY_CODES}")
        self.seed = seed
        self.codes = chosen

    def __repr__(self) -> str:
        return f"SyntheticSource(seed={self.seed}, codes={list(self.codes)})"

    @cached_property
    def market(self) -> SyntheticMarket:
        """The shared futures path (simulated once per source, on first use)."""
        return simulate_market(self.seed)

    def list_codes(self) -> dict[str, str]:
        return {code: fingerprint(self.seed, code) for code in self.codes}

    def load(self, weekly_code: str) -> pl.DataFrame:
        """The code's quotes: canonical columns + lineage, sorted by (option_symbol, ts)."""
        if weekly_code not in self.codes:
            raise UnknownWeeklyCodeError(weekly_code, list(self.codes))
        rng = _rng(self.seed, 1, WEEKLY_CODES.index(weekly_code))
        expires = expiry(weekly_code).astype(datetime).replace(tzinfo=UTC)
        quotes = _quote_book(weekly_code, self.market, rng).sort("option_symbol", "ts")
        return quotes.with_columns(
            pl.lit(weekly_code).alias("weekly_code"),
            pl.lit(UNDERLYING).alias("underlying"),
            pl.lit("future").alias("underlying_kind"),
            pl.lit(expires, dtype=UTC_TS).alias("expiry"),
            pl.lit(RATE).alias("rate"),
            pl.lit(0.0).alias("dividend_yield"),
            pl.lit(f"synthetic://seed={self.seed}/{weekly_code}").alias("source_file"),
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row"),
        ).select(RAW_COLUMNS + LINEAGE_COLUMNS)
