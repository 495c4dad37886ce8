"""Prices, Greeks and implied vols of ``hedge_pipeline.quant.pricing``.

Anchors: Hull's textbook vectors (every quoted digit). Properties on random inputs: put–call
parity, every Greek against a central difference of the price, implied-vol round trips, and
the status of every kind of bad quote. Bounds are the ones the numerics can promise: the
inputs determine a price to a few ulps of max(F, K), hence a vol to that over vega, which is
why the 1e-10 round-trip bound is stated where vega > 1e-3 and forwards and strikes are of
order 100.
"""

from __future__ import annotations

import doctest
import multiprocessing
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedge_pipeline.quant import implied_vol as implied_vol_module
from hedge_pipeline.quant import pricing
from hedge_pipeline.quant.pricing import bs_greeks, bs_price, implied_vol

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _no_numpy_warnings():
    """Nothing here may warn: edge cases are handled, not silenced by the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_module_doctests_do_not_warn() -> None:
    """The examples also run in pytest's doctest collection; here they run once more under
    this module's rule that nothing may warn (an example hitting a NumPy edge case warns)."""
    for module in (pricing, implied_vol_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --------------------------------------------------------------------------------------------
# Hull's vectors
# --------------------------------------------------------------------------------------------

HULL = [
    # (spot, strike, tau, vol, rate, is_call, futures, greek, quoted value)
    (42.0, 40.0, 0.5, 0.2, 0.1, True, False, "price", "4.7594"),
    (42.0, 40.0, 0.5, 0.2, 0.1, False, False, "price", "0.8086"),
    (49.0, 50.0, 20 / 52, 0.2, 0.05, True, False, "price", "2.4005"),
    (49.0, 50.0, 20 / 52, 0.2, 0.05, True, False, "delta", "0.5216"),
    (49.0, 50.0, 20 / 52, 0.2, 0.05, True, False, "gamma", "0.06554"),
    (49.0, 50.0, 20 / 52, 0.2, 0.05, True, False, "vega", "12.105"),
    (49.0, 50.0, 20 / 52, 0.2, 0.05, True, False, "theta", "-4.305"),
    (49.0, 50.0, 20 / 52, 0.2, 0.05, True, False, "rho", "8.907"),
    (100.0, 100.0, 1.0, 0.2, 0.05, True, False, "price", "10.4506"),
    (100.0, 100.0, 1.0, 0.2, 0.05, False, False, "price", "5.5735"),
    # Black-76: a 4-month put on a futures price of 20 struck at 20, r = 9 %, vol 25 %.
    (20.0, 20.0, 4 / 12, 0.25, 0.09, False, True, "price", "1.1166"),
]


@pytest.mark.parametrize(
    ("spot", "strike", "tau", "vol", "rate", "call", "fut", "key", "quote"), HULL
)
def test_hull_vectors(spot, strike, tau, vol, rate, call, fut, key, quote) -> None:
    """Every digit Hull quotes (within half a unit of the last one), and 1e-4 relative."""
    value = float(bs_greeks(spot, strike, tau, vol, rate, is_call=call, futures=fut)[key])
    decimals = len(quote.split(".")[1])
    assert abs(value - float(quote)) <= 0.5 * 10.0**-decimals + 1e-12
    assert value == pytest.approx(float(quote), rel=1e-4)


def test_black76_rho_holds_the_futures_price_fixed() -> None:
    g = bs_greeks(20.0, 20.0, 4 / 12, 0.25, 0.09, is_call=False, futures=True)
    assert float(g["rho"]) == pytest.approx(-4 / 12 * float(g["price"]), rel=1e-15)


# --------------------------------------------------------------------------------------------
# Random markets
# --------------------------------------------------------------------------------------------


@st.composite
def markets(draw, max_sd: float = 3.0, max_spot: float = 200.0, max_log_moneyness: float = 1.5):
    """One option: ln(K/F) within ``max_sd`` standard deviations (and ±max_log_moneyness)."""
    spot = draw(st.floats(20.0, max_spot))
    tau = draw(st.floats(1.0 / 365.0, 3.0))
    vol = draw(st.floats(0.03, 1.5))
    rate = draw(st.floats(-0.02, 0.12))
    dividend = draw(st.floats(0.0, 0.08))
    futures = draw(st.booleans())
    forward = spot if futures else spot * np.exp((rate - dividend) * tau)
    moneyness = draw(st.floats(-max_sd, max_sd)) * vol * np.sqrt(tau)
    strike = forward * np.exp(np.clip(moneyness, -max_log_moneyness, max_log_moneyness))
    return dict(
        spot=spot, strike=strike, tau=tau, vol=vol, rate=rate, dividend=dividend, futures=futures
    )


@PROPERTY
@given(markets())
def test_put_call_parity(m) -> None:
    """C − P = D·(F − K): S·e^{−qτ} − K·e^{−rτ}, or e^{−rτ}(F − K) for Black-76."""
    call = float(bs_price(**m, is_call=True))
    put = float(bs_price(**m, is_call=False))
    carry = m["rate"] if m["futures"] else m["dividend"]
    forward_value = m["spot"] * np.exp(-carry * m["tau"]) - m["strike"] * np.exp(
        -m["rate"] * m["tau"]
    )
    assert call - put == pytest.approx(forward_value, abs=1e-12 * (m["spot"] + m["strike"]))


def _central(m: dict, key: str, h: float, call: bool) -> tuple[float, float, float]:
    up, down = dict(m), dict(m)
    up[key] += h
    down[key] -= h
    return (
        float(bs_price(**up, is_call=call)),
        float(bs_price(**m, is_call=call)),
        float(bs_price(**down, is_call=call)),
    )


@PROPERTY
@given(markets(), st.booleans())
def test_greeks_match_central_differences(m, call) -> None:
    """Each analytic Greek against a central difference of the price.

    Theta is −∂V/∂τ; rho bumps the rate with the spot fixed, which for Black-76 holds the
    futures price fixed. Steps scale with the option's own length scales (S·σ√τ for the
    spot, σ, τ), so truncation stays below 1e-7 relative; ``noise`` bounds the rounding of
    the prices, which the differences divide by their step.
    """
    g = {key: float(value) for key, value in bs_greeks(**m, is_call=call).items()}
    s, tau, vol = m["spot"], m["tau"], m["vol"]
    noise = 16 * np.finfo(float).eps * (s + m["strike"])

    h = 1e-4 * s * vol * np.sqrt(tau)
    up, mid, down = _central(m, "spot", h, call)
    assert g["delta"] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=noise / h)
    h *= 100.0
    up, mid, down = _central(m, "spot", h, call)
    gamma = (up - 2 * mid + down) / (h * h)
    assert g["gamma"] == pytest.approx(gamma, rel=1e-3, abs=4 * noise / (h * h))
    h = 1e-4 * vol
    up, mid, down = _central(m, "vol", h, call)
    assert g["vega"] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=noise / h)
    h = 1e-5 * tau
    up, mid, down = _central(m, "tau", h, call)
    assert g["theta"] == pytest.approx(-(up - down) / (2 * h), rel=1e-6, abs=noise / h)
    h = 1e-6
    up, mid, down = _central(m, "rate", h, call)
    assert g["rho"] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=noise / h)


@PROPERTY
@given(markets(max_sd=4.0, max_spot=100.0, max_log_moneyness=0.5), st.booleans())
def test_implied_vol_round_trip_where_vega_is_informative(m, call) -> None:
    """|iv − vol| ≤ 1e-10 where vega > 1e-3, for forwards and strikes below ~250.

    The inputs only determine the price to a few ulps of max(F, K), hence the vol to that over
    vega: at vega 1e-3 the bound needs ulp(F, K) ≤ 3e-14, i.e. numbers below 256.
    """
    vol = m.pop("vol")
    g = bs_greeks(**m, vol=vol, is_call=call)
    iv, status = implied_vol(g["price"], **m, is_call=call)
    if float(g["vega"]) > 1e-3:
        assert str(status) == "ok"
        assert abs(float(iv) - vol) <= 1e-10


def test_implied_vol_round_trip_in_bulk() -> None:
    """200k options over a wide domain, in one call through the chunked, threaded path.

    Where vega > 1e-3 (forwards and strikes below ~250), |iv − vol| ≤ 1e-10; everywhere, the vol
    reprices the quote to 1e-12 relative (where vega is tiny the vol itself is not determined
    to better than ulp(price)/vega, which is how far apart the representable prices are).
    """
    rng = np.random.default_rng(7)
    n = 200_000
    spot = np.exp(rng.uniform(np.log(10.0), np.log(100.0), n))
    tau = np.exp(rng.uniform(np.log(1.0 / 365.0 / 24.0), np.log(5.0), n))
    vol = np.exp(rng.uniform(np.log(0.01), np.log(3.0), n))
    rate = rng.uniform(-0.02, 0.15, n)
    dividend = rng.uniform(0.0, 0.1, n)
    call = rng.random(n) < 0.5
    futures = rng.random(n) < 0.5
    forward = np.where(futures, spot, spot * np.exp((rate - dividend) * tau))
    strike = forward * np.exp(np.clip(rng.uniform(-6.0, 6.0, n) * vol * np.sqrt(tau), -0.5, 0.5))
    market = dict(
        spot=spot,
        strike=strike,
        tau=tau,
        rate=rate,
        dividend=dividend,
        is_call=call,
        futures=futures,
    )
    g = bs_greeks(vol=vol, **market)
    iv, status = implied_vol(g["price"], **market)

    informative = g["vega"] > 1e-3
    assert informative.mean() > 0.7
    assert np.all(status[informative] == "ok")
    assert np.max(np.abs(iv - vol)[informative]) <= 1e-10
    ok = status == "ok"
    assert np.all(np.isfinite(iv[ok])) and np.all(np.isnan(iv[~ok]))
    repriced = bs_price(vol=iv[ok], **{k: v[ok] for k, v in market.items()})
    assert np.max(np.abs(repriced / g["price"][ok] - 1.0)) <= 1e-12


def test_normalised_solver_to_machine_precision() -> None:
    """In normalised coordinates the two Householder steps reach σ√τ as accurately as the
    price determines it: relative error ≤ 1e-13 (the accuracy of b itself) times the condition
    number b/(s·∂b/∂s)."""
    rng = np.random.default_rng(3)
    n = 200_000
    x = -np.exp(rng.uniform(np.log(1e-10), np.log(50.0), n))
    s = np.exp(rng.uniform(np.log(1e-4), np.log(8.0), n))
    bmax = np.exp(0.5 * x)
    with np.errstate(all="ignore"):
        b, vega = implied_vol_module._normalised_black(x, s, bmax)
        keep = (b > 1e-300) & (b < bmax * (1 - 1e-12))
        solved = implied_vol_module._normalised_vol(b[keep], x[keep], bmax[keep])
    condition = np.maximum(b[keep] / (s[keep] * vega[keep]), 1.0)
    assert np.max(np.abs(solved / s[keep] - 1.0) / condition) <= 1e-13


def test_normalised_black_against_extended_precision() -> None:
    """40-digit reference values across the regions of the normalised Black function."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    rng = np.random.default_rng(5)
    h = -np.concatenate([rng.uniform(0, 2, 150), rng.uniform(2, 12, 150), rng.uniform(12, 30, 60)])
    t = np.exp(rng.uniform(np.log(1e-4), np.log(3.0), h.size))
    x, s = 2 * h * t, 2 * t
    b = implied_vol_module.normalised_black(x, s)

    def reference(xi, si):
        xi, si = mpmath.mpf(xi), mpmath.mpf(si)
        return mpmath.ncdf(xi / si + si / 2) * mpmath.exp(xi / 2) - mpmath.ncdf(
            xi / si - si / 2
        ) * mpmath.exp(-xi / 2)

    ref = np.array([float(reference(xi, si)) for xi, si in zip(x, s, strict=True)])
    # h = x/s carries a rounding of eps·|h|, which moves b by eps·h² relative: that is the floor.
    tolerance = 4e-13 + 4e-16 * h**2
    assert np.all(np.abs(b - ref) <= tolerance * ref)


# --------------------------------------------------------------------------------------------
# Statuses and edges
# --------------------------------------------------------------------------------------------


@PROPERTY
@given(markets(), st.booleans(), st.floats(1e-9, 0.9))
def test_prices_outside_the_no_arbitrage_bounds(m, call, fraction) -> None:
    m.pop("vol")
    carry = m["rate"] if m["futures"] else m["dividend"]
    dfwd = m["spot"] * np.exp(-carry * m["tau"])
    dstk = m["strike"] * np.exp(-m["rate"] * m["tau"])
    intrinsic = max((dfwd - dstk) if call else (dstk - dfwd), 0.0)
    cap = dfwd if call else dstk
    above = cap * (1.0 + fraction)
    assert str(implied_vol(above, **m, is_call=call)[1]) == "above_max"
    assert str(implied_vol(cap, **m, is_call=call)[1]) == "above_max"
    below = intrinsic - fraction * (dfwd + dstk)
    iv, status = implied_vol(below, **m, is_call=call)
    assert str(status) == ("below_intrinsic" if below > 0 else "no_quote")
    assert np.isnan(iv)


def test_status_of_every_kind_of_bad_quote() -> None:
    price = [4.76, np.nan, 0.0, -1.0, np.inf, 4.76, 4.76, 4.76, 4.76, 4.76, 4.76, 4.76, 4.76]
    spot = [42.0, 42.0, 42.0, 42.0, 42.0, np.nan, 0.0, 42.0, 42.0, 42.0, 42.0, 42.0, 42.0]
    strike = [40.0, 40.0, 40.0, 40.0, 40.0, 40.0, 40.0, -40.0, np.inf, 40.0, 40.0, 40.0, 40.0]
    tau = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, -0.1, np.nan, 0.5]
    rate = [0.1] * 12 + [np.nan]
    iv, status = implied_vol(price, spot, strike, tau, rate)
    assert status.tolist() == [
        "ok", "no_quote", "no_quote", "no_quote", "no_quote", "no_quote", "no_quote",
        "no_quote", "no_quote", "expired", "expired", "no_quote", "no_quote",
    ]  # fmt: skip
    assert iv[0] == pytest.approx(0.2, abs=1e-4) and np.all(np.isnan(iv[1:]))


def test_subnormal_prices_are_no_quote() -> None:
    """Below 2.2e-308 a price keeps only a few significant bits: no vol can reprice it."""
    _, status = implied_vol([3e-323, 1e-300], 100.0, [1e-30, 1e-30], 0.5, 0.03, is_call=False)
    assert status.tolist() == ["no_quote", "ok"]


def test_dividend_is_ignored_for_futures() -> None:
    iv, status = implied_vol(1.1166, 20.0, 20.0, 4 / 12, 0.09, np.nan, False, True)
    assert str(status) == "ok" and float(iv) == pytest.approx(0.25, abs=1e-4)
    assert str(implied_vol(1.1166, 20.0, 20.0, 4 / 12, 0.09, np.nan, False, False)[1]) == "no_quote"


def test_price_at_intrinsic_has_zero_vol() -> None:
    """Deep in the money the time value can round away: the price is then exactly intrinsic
    (or a few ulps below), and the only vol that reprices it is 0."""
    iv, status = implied_vol([50.0, 50.0 - 1e-13, 50.0 - 1e-9], 100.0, 50.0, 1.0, 0.0, futures=True)
    assert status.tolist() == ["ok", "ok", "below_intrinsic"]
    assert iv[:2].tolist() == [0.0, 0.0] and np.isnan(iv[2])


@PROPERTY
@given(
    st.floats(-40.0, 40.0),  # ln(K/F) in standard deviations
    st.floats(1e-4, 4.0),  # σ√τ
    st.booleans(),
    st.booleans(),
)
def test_deep_wings_reprice_or_report(moneyness, sd, call, futures) -> None:
    """Far in the wings the vol is ill-conditioned, but the answer is never garbage: either
    'ok' with a vol that reprices the quote to 1e-12 relative, or a status saying why not
    (a price that underflowed to 0, or one that rounds onto a no-arbitrage bound)."""
    tau, rate, dividend, spot = 0.5, 0.03, 0.01, 100.0
    forward = spot if futures else spot * np.exp((rate - dividend) * tau)
    strike = forward * np.exp(moneyness * sd)
    vol = sd / np.sqrt(tau)
    market = dict(
        spot=spot,
        strike=strike,
        tau=tau,
        rate=rate,
        dividend=dividend,
        is_call=call,
        futures=futures,
    )
    price = float(bs_price(vol=vol, **market))
    iv, status = implied_vol(price, **market)
    if str(status) == "ok":
        assert np.isfinite(iv) and iv >= 0.0
        assert float(bs_price(vol=float(iv), **market)) == pytest.approx(price, rel=1e-12)
    else:
        assert str(status) in {"no_quote", "above_max", "below_intrinsic"}
        assert np.isnan(iv)


def test_greeks_at_the_edges_are_finite_and_quiet() -> None:
    """tau → 0, vol → 0, huge vol, deep wings: finite values, intrinsic limits, no warnings."""
    spot, strike = 100.0, np.array([50.0, 99.0, 100.0, 101.0, 200.0])
    for tau in (1e-14, 1e-8, 0.0, -1.0, 2.0):
        for vol in (0.0, 1e-12, 0.2, 20.0):
            for call in (True, False):
                for fut in (True, False):
                    g = bs_greeks(spot, strike, tau, vol, 0.05, 0.02, call, fut)
                    for key, value in g.items():
                        assert np.all(np.isfinite(value)), (tau, vol, call, fut, key)
                    assert np.all(g["price"] >= 0.0)
    g = bs_greeks(spot, strike, 0.0, 0.2, 0.05, 0.02, True, False)
    np.testing.assert_array_equal(g["price"], np.maximum(spot - strike, 0.0))
    np.testing.assert_array_equal(g["delta"], (strike < spot).astype(float))
    np.testing.assert_array_equal(g["gamma"], 0.0)


def test_nan_and_nonpositive_inputs_give_nan() -> None:
    g = bs_greeks(
        [100.0, np.nan, 0.0, 100.0, 100.0],
        [100.0, 100.0, 100.0, -1.0, 100.0],
        1.0,
        [0.2, 0.2, 0.2, 0.2, np.nan],
        0.05,
    )
    for value in g.values():
        assert np.isfinite(value[0]) and np.all(np.isnan(value[1:]))


# --------------------------------------------------------------------------------------------
# Shapes, chunks and threads
# --------------------------------------------------------------------------------------------


def test_broadcasting_and_scalar_shapes() -> None:
    spot = np.array([[90.0], [100.0], [110.0]])
    strike = np.array([95.0, 105.0])
    g = bs_greeks(spot, strike, 0.5, 0.3, 0.02, is_call=[True, False])
    assert all(value.shape == (3, 2) for value in g.values())
    assert float(g["price"][1, 0]) == pytest.approx(float(bs_price(100.0, 95.0, 0.5, 0.3, 0.02)))
    assert bs_price(100.0, 95.0, 0.5, 0.3, 0.02).shape == ()
    iv, status = implied_vol(g["price"], spot, strike, 0.5, 0.02, is_call=[True, False])
    assert iv.shape == status.shape == (3, 2)
    np.testing.assert_allclose(iv, 0.3, atol=1e-12)
    empty_iv, empty_status = implied_vol(np.array([]), 1.0, 1.0, 1.0, 0.0)
    assert empty_iv.shape == empty_status.shape == (0,)


def test_chunked_threaded_path_matches_small_calls() -> None:
    """Arrays larger than a chunk go through the thread pool; the results are identical."""
    rng = np.random.default_rng(11)
    n = 3 * implied_vol_module._CHUNK + 123
    spot = rng.uniform(50, 150, n)
    strike = spot * np.exp(rng.normal(0, 0.2, n))
    tau = rng.uniform(0.01, 2, n)
    vol = rng.uniform(0.05, 1.0, n)
    call = rng.random(n) < 0.5
    g = bs_greeks(spot, strike, tau, vol, 0.03, 0.01, call)
    iv, status = implied_vol(g["price"], spot, strike, tau, 0.03, 0.01, call)
    for i in rng.choice(n, 20, replace=False):
        one = bs_greeks(spot[i], strike[i], tau[i], vol[i], 0.03, 0.01, call[i])
        assert all(float(one[key]) == pytest.approx(g[key][i], rel=1e-13) for key in one)
        alone = implied_vol(g["price"][i], spot[i], strike[i], tau[i], 0.03, 0.01, call[i])
        assert float(alone[0]) == pytest.approx(iv[i], rel=1e-13) and alone[1] == status[i]


def _price_in_child() -> float:
    n = 2 * implied_vol_module._CHUNK
    return float(bs_price(np.full(n, 100.0), 100.0, 1.0, 0.2, 0.05).sum())


def test_thread_pool_survives_fork() -> None:
    """A forked child (Dagster's multiprocess executor) must not wait on its parent's threads."""
    expected = _price_in_child()  # starts the parent's pool
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_price_in_child).get(timeout=60) == pytest.approx(expected)
