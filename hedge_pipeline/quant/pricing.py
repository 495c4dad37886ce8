"""European option prices, analytic Greeks and implied volatility (docs/design.md §5).

Conventions are those of QuantLib's analytic European engine:

* ``futures=True``: Black-76 on the futures price ``spot``; ``dividend`` is ignored.
* ``futures=False``: Black–Scholes–Merton with continuous dividend yield ``dividend``.
* vega per 1.00 of vol, theta per year (−∂V/∂τ), rho per 1.00 of rate; for Black-76 rho holds
  the futures price fixed, so rho = −τ·V.

Everything broadcasts over NumPy arrays and computes in float64. Black-76 is Black–Scholes–
Merton with the dividend yield equal to the rate (the forward equals the futures price), except
for rho, so one kernel serves both. Large inputs run in cache-sized chunks on all cores
(see :func:`hedge_pipeline.quant.implied_vol.run_chunked`); nothing warns: a NaN input gives a
NaN output.

Precision: the textbook difference F·Φ(d1) − K·Φ(d2) cancels for options far out of the money
or close to expiry, losing up to |h|²/t·eps relative (h = ln(F/K)/σ√τ, t = σ√τ/2) of their
tiny time value. Where that could exceed ~1e-13, the time value is recomputed from Jäckel's
normalised Black function, so prices keep ~13 significant digits all the way into the wings and
round-trip through :func:`implied_vol`.

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

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from hedge_pipeline.quant.implied_vol import (
    STATUSES,
    forward_terms,
    implied_vol,
    map_chunked,
    normalised_black,
    uniform,
)

__all__ = ["GREEKS", "STATUSES", "OptionInputs", "bs_greeks", "bs_price", "implied_vol"]

GREEKS = ("price", "delta", "gamma", "vega", "theta", "rho")

_INV_SQRT_2PI = 0.3989422804014327
# Recompute the time value where (F·Φ(d1) + K·Φ(d2))·(1 + d1²) exceeds the price this many
# times: the textbook formula's relative error is about that factor times eps.
_CANCELLATION = 512.0

FloatArray = NDArray[np.float64]

_P = ParamSpec("_P")
_B = TypeVar("_B")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class OptionInputs:
    """The eight inputs of :func:`bs_price` and :func:`bs_greeks`, declared once for both.

    Both functions take exactly these, positionally or by name and with these defaults (see
    :func:`_taking`), broadcast together: six float arrays, then the ``is_call`` and
    ``futures`` flags.
    """

    spot: ArrayLike
    strike: ArrayLike
    tau: ArrayLike
    vol: ArrayLike
    rate: ArrayLike
    dividend: ArrayLike = 0.0
    is_call: ArrayLike = True
    futures: ArrayLike = False

    def evaluate(self, kernel: Callable[..., None], n_outputs: int) -> list[FloatArray]:
        """``kernel(s, k, t, v, r, q, call, fut, *outputs)`` over the broadcast inputs, in
        chunks on all cores: ``n_outputs`` float64 arrays of the broadcast shape."""
        floats = (self.spot, self.strike, self.tau, self.vol, self.rate, self.dividend)
        return map_chunked(kernel, floats, (self.is_call, self.futures), [np.float64] * n_outputs)


def _taking(bundle: Callable[_P, _B]) -> Callable[[Callable[[_B], _R]], Callable[_P, _R]]:
    """Decorator: ``body(bundle(*args, **kwargs))`` as a function of the bundle's own arguments.

    The result has the bundle's parameters (names, order, defaults, annotations: for callers,
    type checkers and ``inspect.signature``) and ``body``'s name, docstring and return type,
    so functions that take the same inputs declare them once, in the bundle.
    """

    def decorate(body: Callable[[_B], _R]) -> Callable[_P, _R]:
        @functools.wraps(body)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            return body(bundle(*args, **kwargs))

        signature = inspect.signature(bundle).replace(
            return_annotation=inspect.signature(body).return_annotation
        )
        call.__signature__ = signature  # type: ignore[attr-defined]
        return call

    return decorate


@_taking(OptionInputs)
def bs_price(options: OptionInputs) -> FloatArray:
    """Price of European options (Black-76 when ``futures``, else Black–Scholes–Merton).

    Takes :class:`OptionInputs`: ``bs_price(spot, strike, tau, vol, rate, dividend=0.0,
    is_call=True, futures=False)``. At ``tau <= 0`` or ``vol <= 0`` the price is the discounted
    intrinsic value of the forward (with tau clipped at 0). A non-positive spot or strike, or
    any NaN input, gives NaN.

    >>> round(float(bs_price(100.0, 100.0, 1.0, 0.2, 0.05)), 4)
    10.4506
    >>> round(float(bs_price(100.0, 100.0, 1.0, 0.2, 0.05, is_call=False)), 4)
    5.5735
    >>> bs_price(100.0, 80.0, 1.0, 0.05, 0.0, futures=True, is_call=False)  # 4.5 sd OTM
    array(3.71983318e-06)
    """
    (price,) = options.evaluate(_price_kernel, 1)
    return price


@_taking(OptionInputs)
def bs_greeks(options: OptionInputs) -> dict[str, FloatArray]:
    """Price and analytic Greeks: keys ``price, delta, gamma, vega, theta, rho``.

    Takes :class:`OptionInputs`, as :func:`bs_price` does. Delta and gamma are with respect to
    ``spot`` (the futures price for Black-76). At expiry (``tau <= 0``) or zero vol the option
    is worth its discounted intrinsic value; delta is then the discounted exercise indicator
    and gamma and vega are zero.

    >>> g = bs_greeks(49.0, 50.0, 20 / 52, 0.2, 0.05)
    >>> round(float(g["gamma"]), 5)
    0.06554
    >>> g = bs_greeks(100.0, 95.0, 0.25, 0.3, 0.04, futures=True, is_call=False)  # Black-76
    >>> round(float(g["rho"]), 6) == round(-0.25 * float(g["price"]), 6)
    True
    """
    values = options.evaluate(_greeks_kernel, len(GREEKS))
    return dict(zip(GREEKS, values, strict=True))


def _sign(call: NDArray[np.bool_]):
    flag = uniform(call)
    return np.where(call, 1.0, -1.0) if flag is None else (1.0 if flag else -1.0)


def _live_price(s, k, t, v, r, q, call, fut, price):
    """Price into ``price``; returns the intermediates the Greeks reuse.

    Written with in-place operations: a fresh 512 kB temporary costs more in page faults
    than the arithmetic that fills it.
    """
    dfwd, dstk, x, q = forward_terms(s, k, t, r, q, fut)
    theta = _sign(call)
    sqrt_t = np.sqrt(t)
    sd = v * sqrt_t
    d1 = x / sd
    scratch = sd * 0.5
    d1 += scratch
    a = np.multiply(d1, theta)
    ndtr(a, out=a)
    a *= dfwd  # D·F·Φ(θ·d1)
    b = np.subtract(d1, sd)
    b *= theta
    ndtr(b, out=b)
    b *= dstk  # D·K·Φ(θ·d2)
    np.subtract(a, b, out=price)
    price *= theta
    d1_sq = np.multiply(d1, d1, out=d1)
    np.add(d1_sq, 1.0, out=scratch)
    cancel = np.add(a, b)
    cancel *= scratch
    np.multiply(price, _CANCELLATION, out=scratch)
    loose = scratch < cancel
    if loose.any():
        idx = np.flatnonzero(loose)
        dfwd_i, dstk_i = dfwd.take(idx), dstk.take(idx)
        intrinsic = dfwd_i - dstk_i
        intrinsic *= theta if np.ndim(theta) == 0 else theta.take(idx)
        np.maximum(intrinsic, 0.0, out=intrinsic)
        price[idx] = intrinsic + _time_value(x.take(idx), sd.take(idx), dfwd_i, dstk_i)
    return dfwd, q, theta, sqrt_t, sd, d1_sq, a, b


def _time_value(x, sd, dfwd, dstk) -> FloatArray:
    """√(DF·DK)·b(−|x|, σ√τ): the out-of-the-money option's value, to full relative precision."""
    return np.sqrt(dfwd) * np.sqrt(dstk) * normalised_black(-np.abs(x), sd)


def _special(s, k, t, v) -> NDArray[np.intp] | None:
    """Indices of options at expiry, with zero vol or with a non-positive spot or strike.

    Four reductions settle the usual case (none) without writing a mask; a NaN minimum falls
    through to the mask, where NaN inputs are not special (they propagate as NaN).
    """
    if all(a.min() > 0.0 for a in (t, v, s, k)):
        return None
    special = (t <= 0.0) | (v <= 0.0) | ~(s > 0.0) | ~(k > 0.0)
    return np.flatnonzero(special) if special.any() else None


def _price_kernel(s, k, t, v, r, q, call, fut, price) -> None:
    _live_price(s, k, t, v, r, q, call, fut, price)
    idx = _special(s, k, t, v)
    if idx is not None:
        price[idx] = _intrinsic(*(a.take(idx) for a in (s, k, t, r, q, call, fut)))[0]


def _greeks_kernel(s, k, t, v, r, q, call, fut, price, delta, gamma, vega, theta_, rho) -> None:
    dfwd, q_eff, theta, sqrt_t, sd, pdf, a, b = _live_price(s, k, t, v, r, q, call, fut, price)
    pdf *= -0.5
    np.exp(pdf, out=pdf)
    pdf *= _INV_SQRT_2PI  # φ(d1)
    np.divide(a, s, out=delta)
    delta *= theta
    np.multiply(dfwd, pdf, out=vega)
    vega *= sqrt_t
    np.multiply(s, s, out=gamma)
    gamma *= sd
    gamma *= sqrt_t
    np.divide(vega, gamma, out=gamma)
    a *= theta  # θ·D·F·Φ(θd1)
    b *= theta  # θ·D·K·Φ(θd2)
    np.divide(v, t, out=theta_)
    theta_ *= vega
    theta_ *= -0.5
    scratch = np.multiply(q_eff, a, out=pdf)
    theta_ += scratch
    np.multiply(r, b, out=scratch)
    theta_ -= scratch
    flag = uniform(fut)
    if flag is None:
        np.negative(price, out=scratch)
        np.copyto(scratch, b, where=~fut)
        np.multiply(t, scratch, out=rho)
    else:
        np.multiply(t, -price if flag else b, out=rho)
    idx = _special(s, k, t, v)
    if idx is not None:
        values = _intrinsic(*(a_.take(idx) for a_ in (s, k, t, r, q, call, fut)))
        for out, value in zip((price, delta, gamma, vega, theta_, rho), values, strict=True):
            out[idx] = value


def _intrinsic(s, k, t, r, q, call, fut) -> tuple[FloatArray, ...]:
    """Price and Greeks of an option worth its discounted intrinsic value (tau clipped at 0);
    NaN where spot or strike is not positive (no such option)."""
    tc = np.maximum(t, 0.0)
    dfwd, dstk, _, q = forward_terms(s, k, tc, r, q, fut)
    theta = np.where(call, 1.0, -1.0)
    itm = (theta * (dfwd - dstk) > 0.0).astype(np.float64)
    price = np.maximum(theta * (dfwd - dstk), 0.0)
    zero = np.zeros_like(price)
    delta = theta * itm * dfwd / s
    theta_ = theta * itm * (q * dfwd - r * dstk)
    rho = np.where(fut, -tc * price, theta * itm * tc * dstk)
    valid = (s > 0.0) & (k > 0.0)
    return tuple(np.where(valid, g, np.nan) for g in (price, delta, zero, zero, theta_, rho))
