"""How a model price becomes a quoted book: smile, bid/ask spread, ticks, trades, open interest.

Shared by the generated sources (``synthetic`` and ``history``), so that the two quote alike:
a quote's implied vol comes from an SVI-shaped smile around an at-the-money level, its mid
from Black–Scholes/Black-76, its half-spread from vega × an IV half-spread that widens away
from the money and near expiry (plus a share of the price), and the quote is rounded outwards
to whole ticks. Where the at-the-money level comes from is the source's business: the Heston
variance for ``synthetic`` (``market_sim.smile_iv``), a real history's implied or forecast
vol for ``history`` (``atm_smile_iv`` here, the same smile with the level given).

Every random number comes from the ``numpy.random.Generator`` the caller passes, drawn in a
fixed order, so a source that seeds its generator per code gives the same bytes every time.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hedge_pipeline.quant.market_sim import FloatArray, SmileParams

IV_HALF_SPREAD = 0.0025  # at the money, a month out: a quarter of a vol point
PRICE_HALF_SPREAD = 0.002  # extra half-spread per unit of option price (deep ITM books)
_MIN_TAU = 1e-12  # years: keeps z finite at expiry, where the price no longer needs a vol


def standardized_atm_moneyness(
    atm: ArrayLike, log_moneyness: ArrayLike, tau: ArrayLike
) -> FloatArray:
    """ln(K/F) in units of the at-the-money standard deviation to expiry, σ_atm·√τ.

    The same distance as ``market_sim.standardized_moneyness``, with the ATM vol given
    directly instead of derived from a Heston variance.

    >>> float(standardized_atm_moneyness(0.2, 0.1, 0.25))
    1.0
    """
    tau = np.maximum(np.asarray(tau, dtype=np.float64), _MIN_TAU)
    return np.asarray(log_moneyness, dtype=np.float64) / (
        np.asarray(atm, np.float64) * np.sqrt(tau)
    )


def atm_smile_iv(
    atm: ArrayLike, log_moneyness: ArrayLike, tau: ArrayLike, smile: SmileParams
) -> FloatArray:
    """Implied vol for each (ATM vol, ln(K/F), τ): ``market_sim.smile_iv``'s smile, level given.

    iv = σ_atm·√(1 + wing·(skew·z + √(z² + 1) − 1)) with z = ln(K/F)/(σ_atm·√τ), so at the
    money the iv is exactly ``atm``, a negative ``skew`` lifts the put wing, and the total
    variance grows at most linearly in |ln(K/F)| (no static arbitrage in the wings).

    >>> iv = atm_smile_iv(0.2, [-0.05, 0.0, 0.05], 0.1, SmileParams())
    >>> bool(iv[0] > iv[2] > 0.0), round(float(iv[1]), 4)
    (True, 0.2)
    """
    atm = np.asarray(atm, dtype=np.float64)
    z = standardized_atm_moneyness(atm, log_moneyness, tau)
    shape = 1.0 + smile.wing * (smile.skew * z + np.sqrt(z * z + 1.0) - 1.0)
    return atm * np.sqrt(shape)


def half_spread(
    mid: FloatArray, vega: FloatArray, z: FloatArray, tau: FloatArray, rng: np.random.Generator
) -> FloatArray:
    """Half-spread in price: quoted in vol, converted by vega, plus a share of the price.

    The IV half-spread widens away from the money (|z|) and as expiry nears (the last day's
    gamma is hard to lay off); the price share widens deep in-the-money books. Log-normal
    noise keeps the spreads from looking machine-made.
    """
    tau_days = np.maximum(tau * 365.0, 1.0 / 288.0)
    iv_half = IV_HALF_SPREAD * (1.0 + 0.5 * z) * (1.0 + 0.5 / np.sqrt(tau_days))
    noise = np.exp(0.25 * rng.standard_normal(mid.shape) - 0.03)
    return (vega * iv_half + PRICE_HALF_SPREAD * mid) * noise


def bid_ask_ticks(
    mid: FloatArray, half: FloatArray, floor: FloatArray, ticks_per_unit: int
) -> tuple[FloatArray, FloatArray]:
    """Round a quote outwards to whole ticks: bid down (not below 0), ask up (≥ bid + 1 tick).

    Returned in ticks (divide by ``ticks_per_unit``: an integer over an integer is the
    correctly rounded double, so the same tick count always gives the same bytes). Rounding
    outwards keeps the model's ordering across strikes (a bid never rises above a neighbour's
    ask), and the ask is raised where needed so that the mid stays above ``floor`` (the
    discounted intrinsic value), with a margin far above float error.

    >>> bid, ask = bid_ask_ticks(np.array([1.0, 0.001]), np.array([0.02, 0.0]),
    ...                          np.array([0.0, 0.0]), 100)
    >>> bid.tolist(), ask.tolist()
    ([98.0, 0.0], [102.0, 1.0])
    """
    bid = np.maximum(np.floor((mid - half) * ticks_per_unit), 0.0)
    ask = np.maximum(np.ceil((mid + half) * ticks_per_unit), bid + 1.0)
    ask = np.maximum(ask, np.ceil(2.0 * (floor + 1e-9) * ticks_per_unit) - bid)
    return bid, ask


def trades(
    z: FloatArray,
    bid: FloatArray,
    ask: FloatArray,
    rng: np.random.Generator,
    mean_size: float = 8.0,
) -> tuple[NDArray[np.int64], FloatArray]:
    """(volume, last in ticks) per bar: trades are likelier and larger near the money.

    A trade prints within the half of the spread around the mid, never at 0; ``last`` is NaN
    for a bar without trades (null in the frame), whose volume is 0. ``mean_size`` is the
    extra contracts an at-the-money bar trades on average (a daily bar trades more than a
    5-minute one).
    """
    near_money = np.exp(-z * z / 8.0)
    u_trade, u_price = rng.random((2, *z.shape))
    traded = u_trade < 0.03 + 0.5 * near_money
    volume = np.where(traded, 1 + rng.poisson(mean_size * near_money), 0)
    last = np.rint((bid + ask) / 2.0 + (u_price - 0.5) * (ask - bid) / 2.0)
    return volume, np.where(traded, np.clip(last, np.maximum(bid, 1.0), ask), np.nan)


def open_interest(z_listing: FloatArray, rng: np.random.Generator, days: int) -> NDArray[np.int64]:
    """Daily open interest per option over ``days`` days: largest near the listing money,
    drifting up slowly."""
    listed = 300.0 + 4000.0 * np.exp(-0.5 * z_listing**2)
    growth = np.cumsum(0.02 + 0.04 * rng.standard_normal((z_listing.size, days)), axis=1)
    return np.rint(listed[:, None] * np.exp(growth - growth[:, :1])).astype(np.int64)
