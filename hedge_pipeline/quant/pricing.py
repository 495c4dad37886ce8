"""European option prices, analytic Greeks and implied volatility (DESIGN §5).

Conventions are those of QuantLib's analytic European engine:

* ``futures=True``: Black-76 on the futures price ``spot``; ``dividend`` is ignored.
* ``futures=False``: Black–Scholes–Merton with continuous dividend yield ``dividend``.
* vega per 1.00 of vol, theta per year (−∂V/∂τ), rho per 1.00 of rate; for Black-76 rho holds
  the futures price fixed, so rho = −τ·V.

Everything broadcasts over NumPy arrays and computes in float64. Black-76 is Black–Scholes–
Merton with the dividend yield equal to the rate (the forward equals the futures price), except
for rho, so one kernel serves both.

Examples (Hull's test vectors):

>>> round(float(bs_price(42.0, 40.0, 0.5, 0.2, 0.1)), 4)
4.7594
>>> round(float(bs_price(42.0, 40.0, 0.5, 0.2, 0.1, is_call=False)), 4)
0.8086
>>> g = bs_greeks(49.0, 50.0, 20 / 52, 0.2, 0.05)
>>> [round(float(g[k]), 3) for k in ("price", "delta", "vega", "theta", "rho")]
[2.401, 0.522, 12.105, -4.305, 8.907]
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

_INV_SQRT_2PI = 0.3989422804014327

FloatArray = NDArray[np.float64]


def _pdf(x: FloatArray) -> FloatArray:
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def _prepare(spot, strike, tau, vol, rate, dividend, is_call, futures):
    """Broadcast the inputs to float64 arrays; Black-76 becomes BSM with q = r."""
    s, k, t, v, r, q = (np.asarray(a, dtype=np.float64) for a in (spot, strike, tau, vol, rate, dividend))
    fut = np.asarray(futures, dtype=bool)
    q = np.where(fut, r, q)
    call = np.asarray(is_call, dtype=bool)
    s, k, t, v, r, q, call, fut = np.broadcast_arrays(s, k, t, v, r, q, call, fut)
    return s, k, t, v, r, q, call, fut


def bs_price(
    spot: ArrayLike,
    strike: ArrayLike,
    tau: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend: ArrayLike = 0.0,
    is_call: ArrayLike = True,
    futures: ArrayLike = False,
) -> FloatArray:
    """Price of European options (Black-76 when ``futures``, else Black–Scholes–Merton).

    At ``tau <= 0`` or ``vol <= 0`` the price is the discounted intrinsic value of the forward.

    >>> round(float(bs_price(100.0, 100.0, 1.0, 0.2, 0.05)), 4)
    10.4506
    >>> round(float(bs_price(100.0, 100.0, 1.0, 0.2, 0.05, is_call=False)), 4)
    5.5735
    """
    return bs_greeks(spot, strike, tau, vol, rate, dividend, is_call, futures, _price_only=True)[
        "price"
    ]


def bs_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    tau: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend: ArrayLike = 0.0,
    is_call: ArrayLike = True,
    futures: ArrayLike = False,
    *,
    _price_only: bool = False,
) -> dict[str, FloatArray]:
    """Price and analytic Greeks: keys ``price, delta, gamma, vega, theta, rho``.

    Delta and gamma are with respect to ``spot`` (the futures price for Black-76). At expiry
    (``tau <= 0``) or zero vol the option is worth its discounted intrinsic value; delta is
    then the discounted exercise indicator and gamma and vega are zero.

    >>> g = bs_greeks(49.0, 50.0, 20 / 52, 0.2, 0.05)
    >>> round(float(g["gamma"]), 5)
    0.06554
    """
    s, k, t, v, r, q, call, fut = _prepare(spot, strike, tau, vol, rate, dividend, is_call, futures)
    sign = np.where(call, 1.0, -1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        live = (t > 0.0) & (v > 0.0)
        tt = np.where(live, t, 1.0)
        vv = np.where(live, v, 1.0)
        sqrt_t = np.sqrt(tt)
        sd = vv * sqrt_t
        df_r = np.exp(-r * np.maximum(t, 0.0))
        df_q = np.exp(-q * np.maximum(t, 0.0))
        d1 = (np.log(s / k) + (r - q + 0.5 * vv * vv) * tt) / sd
        d2 = d1 - sd
        nd1 = ndtr(sign * d1)
        nd2 = ndtr(sign * d2)
        live_price = sign * (s * df_q * nd1 - k * df_r * nd2)
        intrinsic = np.maximum(sign * (s * df_q - k * df_r), 0.0)
        price = np.where(live, live_price, intrinsic)
        out: dict[str, FloatArray] = {"price": price}
        if _price_only:
            return out
        itm = (sign * (s * df_q - k * df_r) > 0.0).astype(np.float64)
        pdf1 = _pdf(d1)
        delta = np.where(live, sign * df_q * nd1, sign * df_q * itm)
        gamma = np.where(live, df_q * pdf1 / (s * sd), 0.0)
        vega = np.where(live, s * df_q * pdf1 * sqrt_t, 0.0)
        theta_live = -s * df_q * pdf1 * vv / (2.0 * sqrt_t) - sign * (
            r * k * df_r * nd2 - q * s * df_q * nd1
        )
        theta_dead = -sign * (r * k * df_r - q * s * df_q) * itm
        theta = np.where(live, theta_live, theta_dead)
        rho_bsm = np.where(live, sign * k * np.maximum(t, 0.0) * df_r * nd2, sign * k * t * df_r * itm)
        rho = np.where(fut, -np.maximum(t, 0.0) * price, rho_bsm)
    out.update(delta=delta, gamma=gamma, vega=vega, theta=theta, rho=rho)
    return out
