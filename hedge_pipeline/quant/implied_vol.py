"""Implied volatility by Jäckel's "Let's Be Rational", vectorized in NumPy.

Why this algorithm: a loop of ``brentq`` costs tens of microseconds per option and a plain
vectorized Newton either diverges in the wings or stalls where vega vanishes. Jäckel's method
(P. Jäckel, "Let's be rational", Wilmott 2015) needs exactly two Householder(3) steps from a
rational-cubic initial guess to reach machine precision everywhere, so the whole solve is a
fixed, branch-free sequence of array operations: no convergence loop, no per-option Python.

Everything happens in *normalised* coordinates. With x = ln(F/K), s = σ√τ and D the discount
factor, an undiscounted call is √(FK)·b(x, s) with

    b(x, s) = Φ(x/s + s/2)·e^{x/2} − Φ(x/s − s/2)·e^{−x/2}.

Put–call parity and the reciprocal-strike symmetry map every option onto an out-of-the-money
call (x ≤ 0) whose normalised price lies in (0, e^{x/2}); equity (Black–Scholes–Merton) and
futures (Black-76) options differ only in how F and D are formed.

:func:`normalised_black` evaluates b to ~13 significant digits in four regions, after
Jäckel's reference code: an asymptotic expansion far in the wing, a small-s expansion, the
plain formula where it cancels least, and a scaled-complementary-error-function form elsewhere.
:mod:`hedge_pipeline.quant.pricing` reuses it wherever the textbook formula loses relative
precision, so that prices and implied vols round-trip.

Speed comes from three things: few transcendental calls (the first two evaluations of b use the
cheaper plain formula, only the last one needs full precision), options sorted by region once
so that each formula runs on a contiguous slice, and large inputs split into 64k-option chunks
on a thread pool (NumPy and SciPy ufuncs release the GIL). The kernels work in place where
they can: on Linux a fresh 512 kB temporary costs more in page faults than its arithmetic.

The array plumbing at the end of this module (:func:`flat_inputs`, :func:`run_chunked`,
:func:`map_chunked`, :func:`forward_terms`) is shared with :mod:`hedge_pipeline.quant.pricing`.

Example (Hull: S=42, K=40, r=10 %, T=0.5, the call worth 4.7594 has a 20 % vol):

>>> iv, status = implied_vol(4.759422392871532, 42.0, 40.0, 0.5, 0.1)
>>> round(float(iv), 12), str(status)
(0.2, 'ok')
>>> implied_vol([0.5, 50.0, 0.0], 42.0, 40.0, 0.5, 0.1)[1].tolist()
['below_intrinsic', 'above_max', 'no_quote']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from math import comb, pi, sqrt

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray
from scipy.special import erfcx, ndtr, ndtri

from hedge_pipeline.runtime.cores import usable_cores

__all__ = ["STATUSES", "implied_vol", "implied_vol_codes", "normalised_black"]

FloatArray = NDArray[np.float64]

STATUSES = ("ok", "below_intrinsic", "above_max", "no_quote", "expired")
_OK, _BELOW, _ABOVE, _NO_QUOTE, _EXPIRED = range(len(STATUSES))
_STATUS_NAMES = np.array(STATUSES, dtype="<U15")

_EPS = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)
_DBL_MAX = float(np.finfo(np.float64).max)
_SQRT_DBL_MAX = sqrt(_DBL_MAX)
_INV_SQRT_2PI = 1.0 / sqrt(2.0 * pi)
_SQRT_2PI = sqrt(2.0 * pi)
_SQRT_PI_OVER_2 = sqrt(pi / 2.0)
_INV_SQRT_2 = 1.0 / sqrt(2.0)
_SQRT_3 = sqrt(3.0)
_TWO_PI_OVER_SQRT_27 = 2.0 * pi / sqrt(27.0)
# A price this many ulps of the forward below intrinsic is rounding, not an arbitrage; a
# normalised price within 4 ulps of its cap e^{x/2} carries no information about the vol.
_INTRINSIC_TOLERANCE = 8.0 * _EPS
_CAP_FRACTION = 1.0 - 4.0 * _EPS

# Regions of the normalised Black function, chosen by measuring each formula against 40-digit
# mpmath. Jäckel's asymptotic expansion holds for h = x/s below _ETA (with t = s/2 small
# enough). Elsewhere the plain formula loses ~eps·|h|²/t to the cancellation of its two terms
# and the erfcx form ~eps/t: the plain one is used where it is the better (h > −1, or past
# h + t = 0.85 where its first term dominates), the erfcx one in the rest of the wing, and for
# t < _SMALL_T a Taylor expansion in t (three of Jäckel's six terms suffice there). Measured
# relative error: ≤ 1e-13 for |h| ≤ 10, and beyond that the floor eps·h² that the rounding of
# h = x/s itself sets (Jäckel's code has the same floor).
_ETA = -10.0
_ASYMPTOTIC_REACH = 2.0 * _EPS ** (1.0 / 16.0)  # Jäckel's bound on h + t − η for the expansion
_SMALL_T = 0.02
_PLAIN_H = -1.0
_NO_CANCELLATION = 0.85

# Rational cubic control parameters (Delbourgo–Gregory): r → R_MAX is linear interpolation.
_R_MIN = -(1.0 - sqrt(_EPS))
_R_MAX = 2.0 / (_EPS * _EPS)

# Small-t expansion of b (Jäckel): b = e^{-(h²+t²)/2}/√(2π) · 2t·(a + Σ_k c_k t^{2k}) with
# a = 1 + h·Y(h), Y = Φ/φ, c_k = Σ_j (α_j + β_j·a)·h^{2j} / (2k+1)!; for t < 0.02 the terms
# beyond k = 3 are below 1e-16 relative.
_SMALL_T_TERMS = (
    (6.0, ((-1, 3), (0, 1))),
    (120.0, ((-7, 15), (-1, 10), (0, 1))),
    (5040.0, ((-57, 105), (-18, 105), (-1, 21), (0, 1))),
)

# Asymptotic expansion for h → −∞ (Abramowitz–Stegun 26.2.12), 17th order in q = (h/r)²,
# r = (h+t)(h−t): the k-th term is (−1)^k (2k−1)!! · 2·Σ_j C(2k+1, 2j+1)·e^j with e = (t/h)².
_ASYMPTOTIC_TERMS = tuple(
    (2 * k - 1, tuple((-1) ** k * 2.0 * comb(2 * k + 1, 2 * j + 1) for j in range(k, -1, -1)))
    for k in range(17, 0, -1)
)


# --------------------------------------------------------------------------------------------
# The normalised Black function, for x <= 0 (out-of-the-money calls)
# --------------------------------------------------------------------------------------------


def normalised_black(x: ArrayLike, s: ArrayLike) -> FloatArray:
    """Normalised price b(x, s) of an out-of-the-money call, x = ln(F/K) ≤ 0, s = σ√τ > 0.

    The undiscounted call is √(FK)·b; in the money (x > 0) add the intrinsic e^{x/2} − e^{−x/2}
    to b(−x, s). Relative error ≤ 1e-13 for |x/s| ≤ 10, even where b is 1e-300 (further out,
    eps·(x/s)², the rounding of x/s itself).

    >>> float(normalised_black(-0.5, 0.2))  # doctest: +ELLIPSIS
    0.00039916350291...

    Thirty standard deviations out of the money, still 14 correct digits:

    >>> float(normalised_black(-30.0, 1.0))  # doctest: +ELLIPSIS
    1.44059384870635...e-199
    """
    x, s = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64))
    shape = x.shape
    x, s = x.reshape(-1), s.reshape(-1)
    return _normalised_black(x, s, np.exp(0.5 * x))[0].reshape(shape)


def _normalised_black(
    x: FloatArray, s: FloatArray, bmax: FloatArray, *, precise: bool = True
) -> tuple[FloatArray, FloatArray]:
    """b(x, s) and its vega ∂b/∂s for x ≤ 0, s > 0 (``bmax`` = e^{x/2}).

    Each region is evaluated on its own compacted subset, so the cost is that of the formula
    each option needs, not of all four. ``precise=False`` uses the plain formula in the erfcx
    region too (relative error up to ~1e-12 instead of 1e-13, at half the cost): good enough
    for every Householder step but the last.
    """
    h = x / s
    t = s * 0.5
    e = h * h
    e += t * t
    e *= -0.5
    np.exp(e, out=e)
    b = np.empty_like(h)
    asymptotic = h < _ETA
    if asymptotic.any():
        asymptotic &= h + t < _ETA + _ASYMPTOTIC_REACH
        _fill(b, asymptotic, _b_asymptotic, h, t, e)
    small_t = t < _SMALL_T
    if small_t.any():
        small_t &= ~asymptotic
        _fill(b, small_t, _b_small_t, h, t, e)
    rest = ~(asymptotic | small_t)
    if precise:
        plain = h > _PLAIN_H
        plain |= h + t > _NO_CANCELLATION
        plain &= rest
        _fill(b, plain, _b_plain, h, t, bmax)
        rest &= ~plain
        _fill(b, rest, _b_scaled, h, t, e)
    else:
        _fill(b, rest, _b_plain, h, t, bmax)
    np.maximum(b, 0.0, out=b)
    e *= _INV_SQRT_2PI
    return b, e


def _fill(out: FloatArray, mask: NDArray[np.bool_], fn: Callable, *args: FloatArray) -> None:
    """``out[mask] = fn(*args[mask])`` without the gather when the mask is all or nothing."""
    if mask.all():
        out[...] = fn(*args)
        return
    idx = np.flatnonzero(mask)
    if idx.size:
        out[idx] = fn(*(a.take(idx) for a in args))


def _b_plain(h: FloatArray, t: FloatArray, bmax: FloatArray) -> FloatArray:
    """Φ(h+t)·e^{x/2} − Φ(h−t)·e^{−x/2}, the textbook formula."""
    u = h + t
    ndtr(u, out=u)
    u *= bmax
    w = h - t
    ndtr(w, out=w)
    w /= bmax
    u -= w
    return u


def _b_scaled(h: FloatArray, t: FloatArray, e: FloatArray) -> FloatArray:
    """b = ½·e^{−(h²+t²)/2}·[erfcx(−(h+t)/√2) − erfcx(−(h−t)/√2)]: one exponential, no Φ.

    Φ(z) far in the left tail is only as accurate as exp(−z²/2); erfcx needs no exponential,
    so the difference of the two rational approximations keeps almost all digits.
    """
    u = h + t
    u *= -_INV_SQRT_2
    erfcx(u, out=u)
    w = t - h
    w *= _INV_SQRT_2
    erfcx(w, out=w)
    u -= w
    u *= e
    u *= 0.5
    return u


def _b_small_t(h: FloatArray, t: FloatArray, e: FloatArray) -> FloatArray:
    """Seventh-order expansion in t for t < 0.02, where the two terms of b nearly cancel."""
    a = h * -_INV_SQRT_2
    erfcx(a, out=a)
    a *= h
    a *= 0.5 * _SQRT_2PI
    a += 1.0  # a = 1 + h·Y(h)
    w = t * t
    h2 = h * h
    acc = np.zeros_like(h)
    c = np.empty_like(h)
    scratch = np.empty_like(h)
    for factorial, coefficients in reversed(_SMALL_T_TERMS):
        alpha, beta = coefficients[-1]
        np.multiply(a, beta, out=c)
        c += alpha
        for alpha, beta in reversed(coefficients[:-1]):
            c *= h2
            c += alpha
            np.multiply(a, beta, out=scratch)
            c += scratch
        c *= 1.0 / factorial
        acc += c
        acc *= w
    acc += a
    acc *= e
    acc *= t
    acc *= 2.0 * _INV_SQRT_2PI
    return acc


def _b_asymptotic(h: FloatArray, t: FloatArray, e: FloatArray) -> FloatArray:
    """Asymptotic expansion for h < −10: one exponential, no subtraction of tail masses."""
    ee = (t / h) ** 2
    r = (h + t) * (h - t)
    q = (h / r) ** 2
    acc = np.zeros_like(h)
    for odd, coefficients in _ASYMPTOTIC_TERMS:
        poly = np.full_like(h, coefficients[0])
        for c in coefficients[1:]:
            poly = poly * ee + c
        acc = odd * q * (poly + acc)
    return _INV_SQRT_2PI * e * (t / r) * (2.0 + acc)


# --------------------------------------------------------------------------------------------
# Rational cubic interpolation (Delbourgo & Gregory 1985), as in Jäckel's initial guess
# --------------------------------------------------------------------------------------------


def _rational_cubic(x, x_l, x_r, y_l, y_r, d_l, d_r, r) -> FloatArray:
    """Delbourgo–Gregory interpolant through (x_l, y_l), (x_r, y_r) with slopes d_l, d_r."""
    h = x_r - x_l
    t = x - x_l
    t /= h
    omt = 1.0 - t
    value = r * y_r  # t²·(y_r·t + (r·y_r − h·d_r)·(1−t)) + (1−t)²·((r·y_l + h·d_l)·t + y_l·(1−t))
    value -= h * d_r
    value *= omt
    value += y_r * t
    value *= t
    value *= t
    left = r * y_l
    left += h * d_l
    left *= t
    left += y_l * omt
    left *= omt
    left *= omt
    value += left
    np.subtract(r, 3.0, out=left)
    left *= t
    left *= omt
    left += 1.0
    value /= left
    linear = r >= _R_MAX
    if linear.any():
        np.copyto(value, y_r * t + y_l * omt, where=linear)
    return value


def _rational_cubic_control(
    x_l, x_r, y_l, y_r, d_l, d_r, second_derivative, *, right: bool, prefer_shape: bool
) -> FloatArray:
    """Control parameter matching a second derivative at one end (None: zero curvature), made
    shape preserving."""
    h = x_r - x_l
    slope = y_r - y_l
    slope /= h
    numerator = d_r - d_l
    if second_derivative is not None:
        numerator += 0.5 * h * second_derivative
    denominator = d_r - slope if right else slope - d_l
    r = numerator / denominator
    flat = np.abs(denominator) < _DBL_MIN
    if flat.any():
        np.copyto(r, np.where(numerator > 0, _R_MAX, _R_MIN), where=flat)
    np.copyto(r, 0.0, where=np.abs(numerator) < _DBL_MIN)
    return np.maximum(r, _minimum_control(d_l, d_r, slope, prefer_shape), out=r)


def _minimum_control(d_l, d_r, slope, prefer_shape: bool) -> FloatArray:
    """Smallest control parameter keeping the interpolant monotonic and convex/concave."""
    monotonic = d_l * slope >= 0
    monotonic &= d_r * slope >= 0
    curved = (d_l <= slope) & (slope <= d_r)  # convex
    curved |= (d_l >= slope) & (slope >= d_r)  # concave
    fallback = _R_MAX if prefer_shape else -_DBL_MAX
    r1 = d_r + d_l
    r1 /= slope
    np.copyto(r1, fallback, where=np.abs(slope) < _DBL_MIN)
    np.copyto(r1, -_DBL_MAX, where=~monotonic)
    spread = d_r - d_l
    r2 = spread / (d_r - slope)
    np.abs(r2, out=r2)
    spread /= slope - d_l
    np.abs(spread, out=spread)
    np.maximum(r2, spread, out=r2)
    separated = np.abs(slope - d_l) >= _DBL_MIN
    separated &= np.abs(d_r - slope) >= _DBL_MIN
    np.copyto(r2, fallback, where=~separated | ~curved)
    shaped = monotonic | curved
    np.copyto(r2, -_DBL_MAX, where=~shaped)
    np.maximum(r1, r2, out=r1)
    np.maximum(r1, _R_MIN, out=r1)
    np.copyto(r1, _R_MIN, where=~shaped)
    return r1


# --------------------------------------------------------------------------------------------
# Let's Be Rational: initial guess by region, then two Householder(3) steps
# --------------------------------------------------------------------------------------------

# Regions of the initial guess, in the order the options are sorted into: below the lower
# inflection-tangent point (log objective), the two middle segments, and above the upper
# point (plain objective below b_max/2, log(b_max − b) objective above).
_LOW, _MID_LOW, _MID_HIGH, _HIGH_PLAIN, _HIGH_LOG = range(5)


def _normalised_vol(beta: FloatArray, x: FloatArray, bmax: FloatArray) -> FloatArray:
    """s = σ√τ with b(x, s) = beta, for x ≤ 0 and 0 < beta < bmax = e^{x/2}.

    Options are sorted by region once, so that every later step works on contiguous slices.
    """
    sc = x * -2.0
    np.sqrt(sc, out=sc)  # inflection point of s ↦ b(x, s): s_c = √(2|x|)
    bc = np.negative(sc)
    ndtr(bc, out=bc)
    bc /= bmax
    np.subtract(0.5 * bmax, bc, out=bc)
    np.maximum(bc, 0.0, out=bc)  # b(x, s_c) = e^{x/2}/2 − Φ(−s_c)·e^{−x/2}
    inv_vc = _SQRT_2PI / bmax  # 1/b'(x, s_c)
    lower = beta < bc
    # The tangents at the inflection point reach b = 0 at s_l and b = b_max at s_h.
    so = bc * inv_vc
    np.subtract(sc, so, out=so)
    np.add(so, _SQRT_2PI, out=so, where=~lower)
    bo, vo = _normalised_black(x, so, bmax, precise=False)
    above = beta > bo
    key = above.astype(np.int8)
    key += above & (beta > 0.5 * bmax)
    key += 2
    np.copyto(key, beta >= bo, where=lower)
    ends = np.cumsum(np.bincount(key, minlength=5))
    order = None
    if np.any(key[1:] < key[:-1]):
        order = np.argsort(key, kind="stable")
        beta, x, bmax, sc, bc, inv_vc, so, bo, vo = (
            a.take(order) for a in (beta, x, bmax, sc, bc, inv_vc, so, bo, vo)
        )
    low = slice(0, ends[_LOW])
    mid_low = slice(ends[_LOW], ends[_MID_LOW])
    mid_high = slice(ends[_MID_LOW], ends[_MID_HIGH])
    high = slice(ends[_MID_HIGH], ends[_HIGH_LOG])
    plain = slice(ends[_LOW], ends[_HIGH_PLAIN])
    high_log = slice(ends[_HIGH_PLAIN], ends[_HIGH_LOG])

    s = np.empty_like(beta)
    s_left = np.empty_like(beta)
    s_right = np.empty_like(beta)
    s[low] = _guess_low(beta[low], x[low], so[low], bo[low])
    s_left[low], s_right[low] = _DBL_MIN, so[low]
    s[mid_low] = _guess_mid(
        beta[mid_low],
        bo[mid_low],
        bc[mid_low],
        so[mid_low],
        sc[mid_low],
        1.0 / vo[mid_low],
        inv_vc[mid_low],
        right=True,
    )
    s_left[mid_low], s_right[mid_low] = so[mid_low], sc[mid_low]
    s[mid_high] = _guess_mid(
        beta[mid_high],
        bc[mid_high],
        bo[mid_high],
        sc[mid_high],
        so[mid_high],
        inv_vc[mid_high],
        1.0 / vo[mid_high],
        right=False,
    )
    s_left[mid_high], s_right[mid_high] = sc[mid_high], so[mid_high]
    s[high] = _guess_high(beta[high], x[high], bmax[high], so[high], bo[high])
    s_left[high], s_right[high] = so[high], _DBL_MAX

    ln_beta = np.log(beta[low])
    ds = np.empty_like(beta)
    for iteration in range(2):
        b, vega = _normalised_black(x, s, bmax, precise=iteration == 1)
        if iteration == 0:  # tighten the bracket
            np.copyto(s_right, s, where=(b > beta) & (s < s_right))
            np.copyto(s_left, s, where=(b < beta) & (s > s_left))
        ds[low] = _step_low(ln_beta, x[low], s[low], b[low], vega[low], s_left[low], s_right[low])
        ds[plain] = _step_plain(beta[plain], x[plain], s[plain], b[plain], vega[plain])
        ds[high_log] = _step_high(
            beta[high_log],
            x[high_log],
            s[high_log],
            b[high_log],
            vega[high_log],
            bmax[high_log],
            s_left[high_log],
            s_right[high_log],
        )
        np.maximum(ds, s * -0.5, out=ds)
        s += ds
        if iteration == 0:  # a step that leaves the bracket is replaced by bisection
            outside = ~((s > s_left) & (s < s_right))
            if outside.any():
                np.copyto(s, 0.5 * (s_left + s_right), where=outside)
    if order is not None:
        s[order] = s.copy()
    return s


def _guess_low(beta, x, sl, bl) -> FloatArray:
    """Below b_l: interpolate the map f = (2π/√27)|x|·Φ(−|x|/(√3 s))³, invert it in closed form.

    f(b) is nearly linear in b there (f → b as b → 0), which is why a rational cubic in f
    is accurate where b itself is exponentially flat in s. The derivatives of f at s_l are
    Jäckel's.
    """
    ax = -x
    z = ax / sl
    z *= 1.0 / _SQRT_3
    y = z * z
    s2 = sl * sl
    phi_m = np.negative(z)
    ndtr(phi_m, out=phi_m)  # Φ(−z)
    # f'' = (π/6)·y/s³·Φ·(8√3·s·|x| + (3s²(s²−8) − 8x²)·Φ/φ(z))·e^{2y + s²/4}
    tmp = x * x
    tmp *= 8.0
    fpp = s2 - 8.0
    fpp *= s2
    fpp *= 3.0
    fpp -= tmp
    np.multiply(y, -0.5, out=z)
    np.exp(z, out=z)
    z *= _INV_SQRT_2PI  # φ(z)
    fpp *= phi_m
    fpp /= z
    np.multiply(sl, ax, out=tmp)
    tmp *= 8.0 * _SQRT_3
    fpp += tmp
    np.multiply(s2, 0.25, out=tmp)
    tmp += y
    tmp += y
    np.exp(tmp, out=tmp)
    fpp *= tmp
    fpp *= phi_m
    fpp *= y
    np.multiply(s2, sl, out=tmp)
    fpp /= tmp
    fpp *= pi / 6.0
    # f' = 2π·y·Φ²·e^{y + s²/8} and f = (2π/√27)·|x|·Φ³
    s2 *= 0.125
    s2 += y
    np.exp(s2, out=s2)
    fp = phi_m * phi_m
    fl = fp * phi_m
    fl *= ax
    fl *= _TWO_PI_OVER_SQRT_27
    fp *= y
    fp *= s2
    fp *= 2.0 * pi
    r = _rational_cubic_control(0.0, bl, 0.0, fl, 1.0, fp, fpp, right=True, prefer_shape=True)
    f = _rational_cubic(beta, 0.0, bl, 0.0, fl, 1.0, fp, r)
    bad = ~(f > 0)
    if bad.any():  # round-off in extreme wings: quadratic through f(0)=0, f'(0)=1, f(b_l)
        u = beta / bl
        np.copyto(f, (fl * u + bl * (1.0 - u)) * u, where=bad)
    f /= ax
    f *= 1.0 / _TWO_PI_OVER_SQRT_27
    np.cbrt(f, out=f)
    ndtri(f, out=f)
    f *= _SQRT_3
    np.divide(x, f, out=f)
    return np.abs(f, out=f)


def _guess_mid(beta, b_l, b_r, s_l, s_r, d_l, d_r, *, right: bool) -> FloatArray:
    """Between the inflection point and a tangent point: rational cubic in (b, s) with zero
    curvature at the inflection point (the right end below it, the left end above it)."""
    r = _rational_cubic_control(b_l, b_r, s_l, s_r, d_l, d_r, None, right=right, prefer_shape=False)
    return _rational_cubic(beta, b_l, b_r, s_l, s_r, d_l, d_r, r)


def _guess_high(beta, x, bmax, sh, bh) -> FloatArray:
    """Above b_h: interpolate f = Φ(−s/2), which tends linearly to 0 as b → b_max."""
    fh = ndtr(-0.5 * sh)
    w = (x / sh) ** 2
    fp = -0.5 * np.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_2 * np.exp(w + 0.125 * sh * sh) * w / sh
    r = _rational_cubic_control(bh, bmax, fh, 0.0, fp, -0.5, fpp, right=False, prefer_shape=True)
    f = _rational_cubic(beta, bh, bmax, fh, 0.0, fp, -0.5, r)
    bad = ~((f > 0) & (np.abs(fpp) < _SQRT_DBL_MAX))
    if bad.any():  # quadratic through f(b_h), f(b_max) = 0 and f'(b_max) = −1/2
        span = bmax - bh
        u = (beta - bh) / span
        np.copyto(f, (fh * (1.0 - u) + 0.5 * span * u) * (1.0 - u), where=bad)
    return -2.0 * ndtri(f)


def _householder(newton, halley, hh3) -> FloatArray:
    """Householder(3) step newton·(1 + halley·newton/2) / (1 + newton·(halley + hh3·newton/6)).

    Overwrites ``halley`` and ``hh3``.
    """
    hh3 *= newton
    hh3 *= 1.0 / 6.0
    hh3 += halley
    hh3 *= newton
    hh3 += 1.0
    halley *= newton
    halley *= 0.5
    halley += 1.0
    halley *= newton
    halley /= hh3
    return halley


def _curvatures(x, s) -> tuple[FloatArray, FloatArray]:
    """b''/b' = x²/s³ − s/4 and b'''/b' = (b''/b')² − 3x²/s⁴ − 1/4."""
    hs = x / s
    hs /= s  # x/s²
    halley = hs * x
    halley /= s
    quarter = s * 0.25
    halley -= quarter
    hh3 = halley * halley
    np.multiply(hs, hs, out=quarter)
    quarter *= 3.0
    hh3 -= quarter
    hh3 -= 0.25
    return halley, hh3


def _step_plain(beta, x, s, b, vega) -> FloatArray:
    """Objective b(s) − beta, for the middle of the curve."""
    newton = beta - b
    newton /= vega
    return _householder(newton, *_curvatures(x, s))


def _step_low(ln_beta, x, s, b, vega, s_left, s_right) -> FloatArray:
    """Objective 1/ln b(s) − 1/ln beta: nearly linear in s where b is exponentially small."""
    ln_b = np.log(b)
    vob = vega / b
    b_halley, b_hh3 = _curvatures(x, s)
    inv_ln_b = 1.0 / ln_b
    two = inv_ln_b * 2.0
    two += 1.0  # 1 + 2/ln b
    newton = ln_beta - ln_b
    newton *= ln_b
    newton /= ln_beta
    newton /= vob
    halley = vob * two
    np.subtract(b_halley, halley, out=halley)
    # hh3 = b'''/b' + 2(b'/b)²·(1 + 3/ln b·(1 + 1/ln b)) − 3·(b''/b')·(b'/b)·(1 + 2/ln b)
    scratch = ln_b
    np.add(inv_ln_b, 1.0, out=scratch)
    scratch *= inv_ln_b
    scratch *= 3.0
    scratch += 1.0
    scratch *= vob
    scratch *= vob
    scratch *= 2.0
    b_hh3 += scratch
    np.multiply(b_halley, vob, out=scratch)
    scratch *= two
    scratch *= 3.0
    b_hh3 -= scratch
    ds = _householder(newton, halley, b_hh3)
    underflow = ~((b > 0) & (vega > 0))
    if underflow.any():  # bisect instead
        np.copyto(ds, 0.5 * (s_left + s_right) - s, where=underflow)
    return ds


def _step_high(beta, x, s, b, vega, bmax, s_left, s_right) -> FloatArray:
    """Objective ln((b_max − beta)/(b_max − b(s))): linear-ish as the price nears its cap."""
    room = bmax - b
    g = np.log((bmax - beta) / room)
    gp = vega / room
    b_halley, b_hh3 = _curvatures(x, s)
    ds = _householder(-g / gp, b_halley + gp, b_hh3 + gp * (2.0 * gp + 3.0 * b_halley))
    return np.where((b < bmax) & (vega > _DBL_MIN), ds, 0.5 * (s_left + s_right) - s)


# --------------------------------------------------------------------------------------------
# Array plumbing shared with pricing: broadcasting to flat arrays, chunks on a thread pool
# --------------------------------------------------------------------------------------------


def flat_inputs(
    floats: Sequence[ArrayLike], flags: Sequence[ArrayLike]
) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Broadcast to one shape and flatten; scalars stay stride-0 views (no copy, and ufuncs
    treat them as scalars)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in floats]
    arrays += [np.asarray(a, dtype=bool) for a in flags]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    return shape, [np.broadcast_to(a, shape).reshape(-1) for a in arrays]


def uniform(a: np.ndarray):
    """The single value of a stride-0 (broadcast scalar) array, else None."""
    return a[0] if a.size and a.strides[0] == 0 else None


# Options per chunk. Each NumPy call holds the GIL for its Python overhead and releases it
# for its loop: measured on 2 cores, chunks of 16k options scale poorly across threads, and
# chunks of 256k lose to cache misses; 64k is the sweet spot for prices, Greeks and vols.
_CHUNK = 1 << 16
_MIN_CHUNK = 1 << 13

_pool_state: dict[str, object] = {}


def _pool() -> tuple[ThreadPoolExecutor | None, int]:
    """The process's worker pool and its size, rebuilt after a fork (the parent's threads do
    not exist in the child)."""
    if _pool_state.get("pid") != os.getpid():
        workers = usable_cores()
        _pool_state["pool"] = (
            ThreadPoolExecutor(workers, thread_name_prefix="hedge-quant") if workers > 1 else None
        )
        _pool_state["workers"] = workers
        _pool_state["pid"] = os.getpid()
    return _pool_state["pool"], _pool_state["workers"]  # type: ignore[return-value]


def run_chunked(
    kernel: Callable[..., None], n: int, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]
) -> None:
    """Apply ``kernel(*input_chunks, *output_chunks)`` to cache-sized chunks, on all cores.

    NumPy and SciPy ufuncs release the GIL inside their loops, so threads are enough; every
    chunk runs under ``np.errstate(all="ignore")`` (the kernels handle inf and NaN themselves).
    """
    if n == 0:
        return
    pool, workers = _pool()
    pieces = -(-n // _CHUNK)
    if pool is not None and pieces < workers and n >= workers * _MIN_CHUNK:
        pieces = workers
    edges = [n * i // pieces for i in range(pieces + 1)]

    def work(i: int) -> None:
        lo, hi = edges[i], edges[i + 1]
        with np.errstate(all="ignore"):
            kernel(*(a[lo:hi] for a in inputs), *(o[lo:hi] for o in outputs))

    if pool is None or pieces == 1:
        for i in range(pieces):
            work(i)
    else:
        list(pool.map(work, range(pieces)))


def map_chunked(
    kernel: Callable[..., None],
    floats: Sequence[ArrayLike],
    flags: Sequence[ArrayLike],
    dtypes: Sequence[DTypeLike],
) -> list[np.ndarray]:
    """``kernel`` over ``floats`` and ``flags`` broadcast together (:func:`flat_inputs`), in
    chunks on all cores (:func:`run_chunked`), into one fresh array per entry of ``dtypes``,
    each returned in the broadcast shape: every public entry point here and in pricing is this
    around its own kernel."""
    shape, flat = flat_inputs(floats, flags)
    n = int(np.prod(shape))
    outputs = [np.empty(n, dtype=dtype) for dtype in dtypes]
    run_chunked(kernel, n, flat, outputs)
    return [out.reshape(shape) for out in outputs]


def forward_terms(s, k, t, r, q, fut):
    """Discounted forward D·F, discounted strike D·K and x = ln(F/K), shared with pricing so
    that a price and its implied vol see exactly the same rounding. Black-76 is BSM with q = r."""
    flag = uniform(fut)
    if flag is None:
        q = np.where(fut, r, q)
    elif flag:
        q = r
    df_r = np.multiply(r, t)
    df_r *= -1.0
    np.exp(df_r, out=df_r)
    x = s / k
    np.log(x, out=x)
    if q is r:
        dfwd = s * df_r
    else:
        carry = np.subtract(r, q)
        carry *= t
        x += carry
        np.multiply(q, t, out=carry)
        carry *= -1.0
        np.exp(carry, out=carry)
        dfwd = np.multiply(s, carry, out=carry)
    df_r *= k
    return dfwd, df_r, x, q


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def implied_vol(
    price: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    tau: ArrayLike,
    rate: ArrayLike,
    dividend: ArrayLike = 0.0,
    is_call: ArrayLike = True,
    futures: ArrayLike = False,
) -> tuple[FloatArray, NDArray[np.str_]]:
    """Implied vol of European option prices: ``(iv, status)``, broadcasting like ``bs_price``.

    ``status`` says why there is no vol (``iv`` is NaN unless status is ``'ok'``), checked in
    this order:

    * ``'no_quote'``: spot, strike, tau, rate (or, for BSM, dividend) not finite, spot or
      strike not positive;
    * ``'expired'``: ``tau <= 0``;
    * ``'no_quote'``: price NaN, infinite or not positive, or a time value so small that it,
      or its value normalised by D·√(FK), is subnormal (below 2.2e-308: too few digits left
      to invert);
    * ``'above_max'``: price at or above the no-arbitrage cap (discounted forward for calls,
      discounted strike for puts), or within 4 ulps of it, where every vol above some level
      gives the same price;
    * ``'below_intrinsic'``: price below the discounted intrinsic value of the forward by more
      than rounding (8·eps·D·(F + K));
    * ``'ok'``. A price at intrinsic (within that tolerance) has vol 0, the only vol that
      reproduces it.

    Accuracy: σ√τ to a few ulps where the price pins it down (in general, relative error
    ≤ 1e-13 × the condition number b/(s·∂b/∂s)). In σ, |error| is a few ulp(max(F, K))/vega
    (the inputs determine the price no better; measured ≤ 4 for σ√τ ≤ 3): where vega > 1e-3
    and forwards and strikes are below ~250 that is ≤ 1e-10. An 'ok' vol always reprices the
    quote to ≤ 1e-12 relative (measured ≤ 6e-13, 40 standard deviations into the wings).

    >>> import numpy as np
    >>> p = np.array([2.4005, 0.4, 10.0])
    >>> iv, status = implied_vol(p, 49.0, 50.0, 20 / 52, 0.05, is_call=[True, False, True])
    >>> np.round(iv, 6).tolist(), status.tolist()
    ([0.199998, 0.030975, 0.835682], ['ok', 'ok', 'ok'])
    >>> implied_vol(1.0, 100.0, 100.0, [0.5, 0.0], 0.0, futures=True)[1].tolist()
    ['ok', 'expired']
    """
    iv, code = implied_vol_codes(price, spot, strike, tau, rate, dividend, is_call, futures)
    return iv, _STATUS_NAMES.take(code)


def implied_vol_codes(
    price: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    tau: ArrayLike,
    rate: ArrayLike,
    dividend: ArrayLike = 0.0,
    is_call: ArrayLike = True,
    futures: ArrayLike = False,
) -> tuple[FloatArray, NDArray[np.int8]]:
    """:func:`implied_vol` with each status as its index in ``STATUSES`` (int8), for callers
    that build columns: turning 50k fixed-width NumPy strings into a string column cost as
    much as the solve itself, an index column maps to names in well under a millisecond.

    >>> iv, code = implied_vol_codes([4.759422392871532, 0.5], 42.0, 40.0, 0.5, 0.1)
    >>> [STATUSES[c] for c in code], round(float(iv[0]), 12)
    (['ok', 'below_intrinsic'], 0.2)
    """
    iv, code = map_chunked(
        _iv_kernel,
        (price, spot, strike, tau, rate, dividend),
        (is_call, futures),
        (np.float64, np.int8),
    )
    return iv, code


def _iv_kernel(price, s, k, t, r, q, call, fut, iv, status) -> None:
    dfwd, dstk, x, q = forward_terms(s, k, t, r, q, fut)
    flag = uniform(call)
    if flag is None:
        theta, cap = np.where(call, 1.0, -1.0), np.where(call, dfwd, dstk)
    else:
        theta, cap = (1.0, dfwd) if flag else (-1.0, dstk)
    tv = dfwd - dstk
    tv *= theta
    np.maximum(tv, 0.0, out=tv)
    np.subtract(price, tv, out=tv)  # time value: price − discounted intrinsic
    xo = np.abs(x, out=x)
    xo *= -1.0
    bmax = xo * 0.5
    np.exp(bmax, out=bmax)
    beta = np.maximum(tv, 0.0)
    scratch = np.sqrt(dfwd)
    beta /= scratch
    np.sqrt(dstk, out=scratch)
    beta /= scratch
    # The common case first: every input finite and in range, every price strictly inside
    # its no-arbitrage bounds.
    above = price >= cap
    np.multiply(bmax, _CAP_FRACTION, out=scratch)
    above |= beta >= scratch
    np.add(dfwd, dstk, out=scratch)
    scratch *= -_INTRINSIC_TOLERANCE
    below = tv < scratch
    lost = np.minimum(tv, beta) < _DBL_MIN  # a subnormal price has lost its digits
    lost &= tv > 0
    np.add(s, k, out=scratch)
    for a in (t, r, q, price):
        scratch += a
    good = np.isfinite(scratch)
    for a in (s, k, t, price):
        good &= a > 0
    good &= ~(above | below | lost)
    if good.all():
        np.sqrt(t, out=scratch)
        np.divide(_normalised_vol_or_zero(beta, xo, bmax), scratch, out=iv)
        status[...] = _OK
        return
    inputs_ok = (s > 0) & (s < np.inf) & (k > 0) & (k < np.inf) & np.isfinite(t + r + q)
    status[...] = np.select(
        [~inputs_ok, ~(t > 0), ~((price > 0) & (price < np.inf)) | lost, above, below],
        [_NO_QUOTE, _EXPIRED, _NO_QUOTE, _ABOVE, _BELOW],
        _OK,
    )
    iv[...] = np.nan
    idx = np.flatnonzero(status == _OK)
    if idx.size:
        iv[idx] = _normalised_vol_or_zero(beta[idx], xo[idx], bmax[idx]) / np.sqrt(t.take(idx))


def _normalised_vol_or_zero(beta, x, bmax) -> FloatArray:
    """``_normalised_vol`` where beta > 0; 0 where the price is at intrinsic (beta = 0)."""
    zero = beta == 0.0
    if not zero.any():
        return _normalised_vol(beta, x, bmax)
    s = np.zeros_like(beta)
    idx = np.flatnonzero(~zero)
    if idx.size:
        s[idx] = _normalised_vol(beta[idx], x[idx], bmax[idx])
    return s
