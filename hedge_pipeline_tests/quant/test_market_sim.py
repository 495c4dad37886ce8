"""The market generators reproduce the moments their models promise, on irregular grids too."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedge_pipeline.quant.market_sim import (
    HestonParams,
    SmileParams,
    simulate_gbm,
    simulate_heston,
    smile_iv,
)
from hedge_pipeline.quant.pricing import bs_price


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _session_grid(n_days: int, bars: int = 12) -> np.ndarray:
    """Year fractions of intraday bars with overnight and weekend gaps (calendar clock)."""
    day_starts = [7 * (d // 5) + d % 5 for d in range(n_days)]
    hours = np.array([[24.0 * s + 13.5 + h / 2 for h in range(bars)] for s in day_starts])
    return hours.ravel() / (24.0 * 365.0)


GRID = _session_grid(15)  # three weeks, 180 bars, steps from 30 minutes to a weekend
STRESSED = HestonParams(v0=0.09, theta=0.04, kappa=2.0, xi=0.9, rho=-0.7)  # Feller fails


@pytest.mark.parametrize("scheme", ["qe", "euler"])
@pytest.mark.parametrize("params", [HestonParams(), STRESSED], ids=["default", "stressed"])
def test_heston_futures_is_a_martingale_and_variance_reverts(scheme, params):
    paths = simulate_heston(100.0, params, GRID, _rng(11), n_paths=20_000, scheme=scheme)
    f_t, v_t = paths.price[:, -1], paths.variance[:, -1]
    assert abs(f_t.mean() - 100.0) < 4.0 * f_t.std() / np.sqrt(f_t.size)
    expected_v = params.expected_variance(GRID[-1] - GRID[0])
    assert abs(v_t.mean() - expected_v) < 4.0 * v_t.std() / np.sqrt(v_t.size) + 0.02 * expected_v
    assert np.all(paths.variance >= 0.0)


def test_heston_qe_is_exact_in_the_zero_vol_of_vol_limit():
    params = HestonParams(v0=0.09, theta=0.04, kappa=3.0, xi=1e-6, rho=-0.5)
    paths = simulate_heston(100.0, params, GRID, _rng(2), n_paths=4000)
    np.testing.assert_allclose(paths.variance[0], params.expected_variance(GRID - GRID[0]), 1e-5)
    # With deterministic variance, ln F_T is normal with variance ∫v dt.
    total_var = np.sum(0.5 * (paths.variance[0, 1:] + paths.variance[0, :-1]) * np.diff(GRID))
    log_ret = np.log(paths.price[:, -1] / 100.0)
    assert log_ret.var() == pytest.approx(total_var, rel=0.06)


def test_leverage_effect_returns_and_variance_move_against_each_other():
    paths = simulate_heston(100.0, HestonParams(rho=-0.6), GRID, _rng(3), n_paths=2000)
    d_log_f = np.diff(np.log(paths.price), axis=1).ravel()
    d_var = np.diff(paths.variance, axis=1).ravel()
    assert np.corrcoef(d_log_f, d_var)[0, 1] == pytest.approx(-0.6, abs=0.08)


def test_gbm_terminal_moments_match_lognormal_theory():
    grid = GRID[::12]  # GBM is sampled exactly: a coarse irregular grid is enough
    vol, t = 0.3, grid[-1] - grid[0]
    paths = simulate_gbm(100.0, vol, grid, _rng(4), n_paths=100_000)
    log_ret = np.log(paths.price[:, -1] / 100.0)
    assert log_ret.mean() == pytest.approx(-0.5 * vol**2 * t, abs=4 * vol * np.sqrt(t / 1e5))
    assert log_ret.var() == pytest.approx(vol**2 * t, rel=0.02)
    assert abs(paths.price[:, -1].mean() - 100.0) < 4 * paths.price[:, -1].std() / np.sqrt(1e5)
    assert np.all(paths.variance == vol**2)


def test_drift_moves_the_mean_as_exp_drift_t():
    t = np.linspace(0.0, 1.0, 50)
    paths = simulate_heston(100.0, HestonParams(), t, _rng(5), n_paths=40_000, drift=0.1)
    se = paths.price[:, -1].std() / np.sqrt(40_000)
    assert abs(paths.price[:, -1].mean() - 100.0 * np.exp(0.1)) < 4 * se


@pytest.mark.parametrize("scheme", ["qe", "euler"])
def test_same_seed_same_paths_other_seed_other_paths(scheme):
    def run(seed):
        return simulate_heston(110.0, HestonParams(), GRID, _rng(seed), n_paths=3, scheme=scheme)

    a, b, c = run(7), run(7), run(8)
    assert a.price.tobytes() == b.price.tobytes()
    assert a.variance.tobytes() == b.variance.tobytes()
    assert not np.array_equal(a.price, c.price)
    assert a.price.shape == a.variance.shape == (3, GRID.size)
    assert np.all(a.price[:, 0] == 110.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="increasing"):
        simulate_heston(100.0, HestonParams(), [0.0, 0.1, 0.1], _rng(0))
    with pytest.raises(ValueError, match="scheme"):
        simulate_heston(100.0, HestonParams(), GRID, _rng(0), scheme="milstein")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rho"):
        HestonParams(rho=-1.5)
    with pytest.raises(ValueError, match="skew"):
        SmileParams(skew=1.0)


def test_smile_has_negative_skew_and_curvature_around_the_term_structure_level():
    heston = HestonParams(v0=0.09, theta=0.04)
    k = np.array([-0.06, -0.03, 0.0, 0.03, 0.06])
    iv = smile_iv(heston.v0, k, 0.05, heston, SmileParams())
    assert iv[1] > iv[3] and iv[0] > iv[4]  # OTM puts above equidistant OTM calls
    assert iv[0] + iv[4] > 2 * iv[2]  # curvature
    assert iv[2] == pytest.approx(np.sqrt(heston.mean_variance(heston.v0, 0.05)))
    assert heston.mean_variance(heston.v0, 1e-9) == pytest.approx(heston.v0)


@settings(max_examples=60, deadline=None)
@given(
    variance=st.floats(0.005, 0.3),
    tau=st.floats(1e-5, 0.5),
    wing=st.floats(0.0, 0.5),
    skew=st.floats(-0.9, 0.9),
)
def test_smile_prices_have_no_strike_arbitrage(variance, tau, wing, skew):
    """Calls fall and puts rise with the strike, and calls are convex (butterflies ≥ 0)."""
    strikes = np.linspace(70.0, 150.0, 801)
    iv = smile_iv(variance, np.log(strikes / 100.0), tau, HestonParams(), SmileParams(wing, skew))
    calls = bs_price(100.0, strikes, tau, iv, 0.045, is_call=True, futures=True)
    puts = bs_price(100.0, strikes, tau, iv, 0.045, is_call=False, futures=True)
    assert np.all(iv > 0.0)
    assert np.all(np.diff(calls) <= 1e-12)
    assert np.all(np.diff(puts) >= -1e-12)
    assert np.all(np.diff(calls, 2) >= -1e-9)
