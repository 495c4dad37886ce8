"""``hedge bench greeks``: throughput and accuracy of prices, Greeks and implied vols.

One random but realistic book is built once (calls and puts, futures and equity options,
tau from a day to two years, vols 5 %–150 %, strikes within ±2 standard deviations of the
forward), priced at known vols, and then every contender runs on the same options in the same
process:

* ours: :func:`~hedge_pipeline.quant.pricing.bs_greeks` (price and five Greeks) and
  :func:`~hedge_pipeline.quant.pricing.implied_vol`, on the whole book;
* the textbook vectorized NumPy/SciPy Greeks (one pass of array formulas, ``scipy.special.ndtr``);
* ``py_lets_be_rational``, Jäckel's reference algorithm in pure Python, one option at a time
  (a dev-only dependency: reported unavailable when it is not installed);
* ``scipy.optimize.brentq`` per option, the common robust fallback;
* ``scipy.optimize.newton`` on whole arrays from the Manaster–Koehler guess, the common
  vectorized approach.

Scalar peers run on subsamples (their cost per option does not depend on the batch size) and
are reported in options per second like the rest. Accuracy is the largest absolute error of
the implied vol against the vol that generated the price, over options whose vega exceeds
1e-3 (per 1.00 of vol, in price units), where the price determines the vol to 1e-10.
Times are wall-clock: the median of ``repeats`` runs, and the best one.

The module imports neither Dagster nor torch; ``hedge bench greeks`` prints ``run()`` as JSON.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import warnings
from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq, newton
from scipy.special import ndtr

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.quant.pricing import bs_greeks, implied_vol

TARGETS = {"price_greeks_options_per_s": 10e6, "implied_vol_options_per_s": 3e6}
VEGA_FLOOR = 1e-3
_SCALAR_SAMPLE = 20_000
_BRENTQ_SAMPLE = 5_000
_NEWTON_SAMPLE = 200_000
_SQRT2 = math.sqrt(2.0)


def option_set(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The benchmark book: ``n`` options with their true vol, price and vega."""
    rng = np.random.default_rng(seed)
    book = {  # drawn in this order: the same book for the same seed
        "spot": rng.uniform(50.0, 150.0, n),
        "tau": np.exp(rng.uniform(math.log(1.0 / 365.0), math.log(2.0), n)),
        "vol": rng.uniform(0.05, 1.5, n),
        "rate": rng.uniform(0.0, 0.08, n),
        "dividend": rng.uniform(0.0, 0.04, n),
        "is_call": rng.random(n) < 0.5,
        "futures": rng.random(n) < 0.5,
    }
    forward, _ = _forward_and_discount(book)
    spread = rng.uniform(-2.0, 2.0, n) * book["vol"] * np.sqrt(book["tau"])
    book["strike"] = forward * np.exp(spread)
    greeks = bs_greeks(**book)
    book.update(price=greeks["price"], vega=greeks["vega"])
    return book


def run(n: int = 1_000_000, seed: int = 0, repeats: int = 5) -> dict:
    """Run the suite; a JSON-serialisable report (see the module docstring)."""
    book = option_set(n, seed)
    market = {
        k: book[k] for k in ("spot", "strike", "tau", "rate", "dividend", "is_call", "futures")
    }
    informative = book["vega"] > VEGA_FLOOR

    greeks_time = _timed(lambda: bs_greeks(vol=book["vol"], **market), repeats)
    iv, status = implied_vol(book["price"], **market)
    iv_time = _timed(lambda: implied_vol(book["price"], **market), repeats)
    ours_greeks = _speed(greeks_time, n)
    ours_iv = _speed(iv_time, n) | _accuracy(iv, book["vol"], informative)
    names, counts = np.unique(status, return_counts=True)
    ours_iv["status_counts"] = {str(k): int(c) for k, c in zip(names, counts, strict=True)}

    textbook = _speed(_timed(lambda: _textbook_greeks(book), repeats), n)
    textbook["max_abs_price_difference"] = float(
        np.max(np.abs(_textbook_greeks(book)["price"] - book["price"]))
    )
    peers_iv = {
        "py_lets_be_rational_scalar": _lets_be_rational(book, informative, repeats),
        "scipy_brentq_scalar": _brentq(book, informative, repeats),
        "scipy_newton_vectorized": _newton(book, informative, repeats),
    }
    for peer in peers_iv.values():
        if peer.get("options_per_s"):
            peer["ratio_ours_over_peer"] = ours_iv["options_per_s"] / peer["options_per_s"]
    textbook["ratio_ours_over_peer"] = ours_greeks["options_per_s"] / textbook["options_per_s"]

    return {
        "suite": "greeks",
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "machine": machine_info("numpy", "scipy"),
        "config": {
            "n": n,
            "seed": seed,
            "repeats": repeats,
            "book": "calls/puts, futures/equity, tau log-uniform 1 day..2 years, vol 5%..150%, "
            "ln(K/F) uniform in ±2·vol·√tau, spot 50..150, rate 0..8%, dividend 0..4%",
            "vega_floor": VEGA_FLOOR,
            "informative_fraction": float(informative.mean()),
        },
        "ours": {"price_greeks": ours_greeks, "implied_vol": ours_iv},
        "peers": {"textbook_scipy_greeks": textbook, **peers_iv},
        "targets": {
            **TARGETS,
            "price_greeks_met": (
                ours_greeks["options_per_s"] >= TARGETS["price_greeks_options_per_s"]
            ),
            "implied_vol_met": ours_iv["options_per_s"] >= TARGETS["implied_vol_options_per_s"],
        },
    }


# --------------------------------------------------------------------------------------------
# Timing and reporting
# --------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _speed(times: list[float], n: int) -> dict:
    median = float(np.median(times))
    return {
        "n": n,
        "seconds_median": median,
        "seconds_min": min(times),
        "options_per_s": n / median,
        "options_per_s_best": n / min(times),
    }


def _accuracy(iv: np.ndarray, vol: np.ndarray, informative: np.ndarray) -> dict:
    err = np.abs(iv - vol)[informative]
    return {
        "max_abs_error_vega_gt_1e-3": float(np.max(np.where(np.isnan(err), np.inf, err))),
        "failed_vega_gt_1e-3": int(np.count_nonzero(~np.isfinite(err))),
    }


def _sample(book: dict[str, np.ndarray], informative: np.ndarray, size: int):
    """The first ``size`` options (the book is already random) and their informative mask."""
    size = min(size, informative.size)
    return {k: v[:size] for k, v in book.items()}, informative[:size]


def _forward_and_discount(b: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    carry = np.where(b["futures"], 0.0, b["rate"] - b["dividend"])
    return b["spot"] * np.exp(carry * b["tau"]), np.exp(-b["rate"] * b["tau"])


# --------------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------------


def _textbook_greeks(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Price and Greeks the way most code writes them: one pass of array formulas."""
    s, k, t, v, r = b["spot"], b["strike"], b["tau"], b["vol"], b["rate"]
    q = np.where(b["futures"], r, b["dividend"])
    sign = np.where(b["is_call"], 1.0, -1.0)
    sqrt_t = np.sqrt(t)
    d1 = (np.log(s / k) + (r - q + 0.5 * v * v) * t) / (v * sqrt_t)
    d2 = d1 - v * sqrt_t
    df_r, df_q = np.exp(-r * t), np.exp(-q * t)
    nd1, nd2 = ndtr(sign * d1), ndtr(sign * d2)
    pdf = np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)
    price = sign * (s * df_q * nd1 - k * df_r * nd2)
    return {
        "price": price,
        "delta": sign * df_q * nd1,
        "gamma": df_q * pdf / (s * v * sqrt_t),
        "vega": s * df_q * pdf * sqrt_t,
        "theta": -s * df_q * pdf * v / (2 * sqrt_t)
        - sign * (r * k * df_r * nd2 - q * s * df_q * nd1),
        "rho": np.where(b["futures"], -t * price, sign * k * t * df_r * nd2),
    }


def _scalar_rows(b: dict[str, np.ndarray], call_flag: np.ndarray) -> list[tuple]:
    """Per option, as the scalar peers take it: (undiscounted price, forward, strike, tau, flag)."""
    forward, discount = _forward_and_discount(b)
    columns = ((b["price"] / discount), forward, b["strike"], b["tau"], call_flag)
    return list(zip(*(c.tolist() for c in columns), strict=True))


def _lets_be_rational(book, informative, repeats) -> dict:
    try:
        from py_lets_be_rational import implied_volatility_from_a_transformed_rational_guess
    except ImportError:
        return {"available": False, "scalar": True}
    b, mask = _sample(book, informative, _SCALAR_SAMPLE)
    rows = _scalar_rows(b, np.where(b["is_call"], 1.0, -1.0))  # its q = +1 call, -1 put

    def solve() -> list[float]:
        out = []
        for row in rows:
            try:
                out.append(implied_volatility_from_a_transformed_rational_guess(*row))
            except Exception:  # its below-intrinsic / above-maximum exceptions
                out.append(math.nan)
        return out

    result = _speed(_timed(solve, repeats), len(rows))
    return {
        "available": True,
        "scalar": True,
        **result,
        **_accuracy(np.array(solve()), b["vol"], mask),
    }


def _brentq_objective(vol, forward, strike, root_t, call, target) -> float:
    """Undiscounted Black price minus the target, with the standard library's erfc."""
    sd = vol * root_t
    d1 = math.log(forward / strike) / sd + 0.5 * sd
    d2 = d1 - sd
    if call:
        price = 0.5 * (forward * math.erfc(-d1 / _SQRT2) - strike * math.erfc(-d2 / _SQRT2))
    else:
        price = 0.5 * (strike * math.erfc(d2 / _SQRT2) - forward * math.erfc(d1 / _SQRT2))
    return price - target


def _brentq(book, informative, repeats) -> dict:
    b, mask = _sample(book, informative, _BRENTQ_SAMPLE)
    rows = _scalar_rows(b, b["is_call"])

    def solve() -> list[float]:
        out = []
        for target, f, k, t, call in rows:
            try:
                out.append(
                    brentq(
                        _brentq_objective,
                        1e-4,
                        10.0,
                        args=(f, k, math.sqrt(t), call, target),
                        xtol=1e-15,
                        rtol=4 * np.finfo(float).eps,
                    )
                )
            except ValueError:  # no sign change: price outside [vol 1e-4, vol 10]
                out.append(math.nan)
        return out

    result = _speed(_timed(solve, repeats), len(rows))
    return {"scalar": True, **result, **_accuracy(np.array(solve()), b["vol"], mask)}


def _newton(book, informative, repeats) -> dict:
    b, mask = _sample(book, informative, _NEWTON_SAMPLE)
    forward, discount = _forward_and_discount(b)
    target = b["price"] / discount
    sign = np.where(b["is_call"], 1.0, -1.0)
    root_t = np.sqrt(b["tau"])
    x = np.log(forward / b["strike"])
    guess = np.sqrt(2.0 * np.abs(x) / b["tau"]) + 1e-3  # Manaster–Koehler: the inflection point

    def objective(v):
        sd = v * root_t
        d1 = x / sd + 0.5 * sd
        return sign * (forward * ndtr(sign * d1) - b["strike"] * ndtr(sign * (d1 - sd))) - target

    def slope(v):
        sd = v * root_t
        d1 = x / sd + 0.5 * sd
        return forward * np.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi) * root_t

    def solve():
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "some failed to converge"
            return newton(
                objective, guess, fprime=slope, tol=1e-14, maxiter=50, full_output=True, disp=False
            )

    result = _speed(_timed(solve, repeats), target.size)
    root, converged, _ = solve()
    return {
        "scalar": False,
        **result,
        **_accuracy(root, b["vol"], mask),
        "converged_fraction": float(np.mean(converged)),
    }
