"""The realized-vol forecast walk-forward: losses, HAR, GARCH, the bootstrap, no look-ahead."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hedge_pipeline.quant import vol_forecast as vf
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig
from hedge_pipeline.stages.market_data.sources.history import fit_garch, read_history

TINY = vf.CnnLstmSettings(
    sequence_length=10,
    conv_channels=4,
    lstm_hidden=4,
    attention_heads=0,
    embedding_dim=4,
    max_epochs=2,
    patience=1,
)


def network(settings: vf.CnnLstmSettings, n_features: int) -> CnnLstm:
    """The stage's network at the settings' sizes (as the module docstring composes it)."""
    return CnnLstm(CnnLstmConfig(n_features=n_features, n_targets=1, **settings.sizes))


STAGES = {"fit_garch": fit_garch, "network": network}
BASELINES_ONLY = {"fit_garch": fit_garch, "network": None}


def _garch_path(
    n: int, seed: int, alpha: float = 0.1, beta: float = 0.85, long_var: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Dates (calendar days) and closes of a GARCH(1,1) path, returns in percent."""
    rng = np.random.default_rng(seed)
    var, r = long_var, np.empty(n - 1)
    for t in range(r.size):
        r[t] = math.sqrt(var) * rng.standard_normal()
        var = long_var * (1 - alpha - beta) + alpha * r[t] ** 2 + beta * var
    closes = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r / 100.0)]))
    dates = np.datetime64("2000-01-03") + np.arange(n)
    return dates, closes


def test_losses_known_values():
    realized = np.array([0.04, 0.08, 0.02])
    forecast = np.array([0.04, 0.04, 0.04])
    assert vf.mse(realized, forecast) == pytest.approx([0.0, 0.0016, 0.0004])
    # QLIKE: x − log x − 1 at x = RV/σ̂² = 1, 2, 1/2.
    expected = [0.0, 1.0 - math.log(2.0), math.log(2.0) - 0.5]
    assert vf.qlike(realized, forecast) == pytest.approx(expected)


def test_realized_variance_is_the_next_h_returns_annualized():
    r = vf.log_returns(np.exp(np.cumsum([0.0, 0.01, -0.02, 0.03, 0.0, 0.01])))
    rv = vf.realized_variance(r, 2)
    assert rv[0] == pytest.approx(126 * (0.01**2 + 0.02**2))  # r_1, r_2: after day 0
    assert rv[3] == pytest.approx(126 * (0.0 + 0.01**2))
    assert np.isnan(rv[4:]).all()
    assert vf.persistence(r, 2)[2] == pytest.approx(rv[0])  # the same window, seen from day 2


def test_har_recovers_the_coefficients_of_a_har_process():
    """Returns whose next-day variance is a HAR of past squared returns: with h = 1 the OLS
    target's conditional mean is exactly linear in HAR's regressors."""
    const, daily, weekly, monthly = 2e-6, 0.2, 0.3, 0.3
    rng = np.random.default_rng(7)
    n = 40_000
    z = math.sqrt(3.0) * rng.uniform(-1.0, 1.0, n)  # unit variance, light tails
    r = np.zeros(n)
    r2 = np.zeros(n)
    for t in range(22, n):
        var = (
            const
            + daily * r2[t - 1]
            + weekly * r2[t - 5 : t].mean()
            + monthly * r2[t - 22 : t].mean()
        )
        r[t] = math.sqrt(var) * z[t]
        r2[t] = r[t] ** 2
    r[0] = np.nan
    x, y = vf.har_features(r), vf.realized_variance(r, 1)
    rows = np.arange(500, n - 1)
    coef = vf.fit_har(x[rows], y[rows])
    assert coef[1:] == pytest.approx([daily, weekly, monthly], abs=0.03)
    assert coef[0] == pytest.approx(252 * const, rel=0.15)


def _cut_and_changed(dates, closes, d, end):
    """The series cut right after the last test target, and one with every return after
    ``d`` changed (scaled by a random factor; the closes up to ``d`` untouched)."""
    rng = np.random.default_rng(99)
    after = np.diff(np.log(closes[d:])) * rng.uniform(0.2, 3.0, closes.size - d - 1)
    changed = np.concatenate([closes[: d + 1], closes[d] * np.exp(np.cumsum(after))])
    return (dates[: end + 1], closes[: end + 1]), (dates, changed)


def test_no_look_ahead():
    dates, closes = _garch_path(1400, seed=1)
    d, test_days, h = 1000, 30, 5
    as_of = [str(dates[d])]
    kwargs = {"test_days": test_days, "horizon": h, "cnn_lstm": TINY, "resamples": 50, **STAGES}
    full = vf.walk_forward_forecasts(dates, closes, as_of, **kwargs)[0]
    end = d + test_days - 1 + h
    cut, changed = _cut_and_changed(dates, closes, d, end)
    short = vf.walk_forward_forecasts(*cut, as_of, **kwargs)[0]
    assert short["test"] == full["test"] and full["test"]["target_end"] == str(dates[end])
    for name, forecast in full["daily"]["forecasts"].items():
        np.testing.assert_allclose(short["daily"]["forecasts"][name], forecast, rtol=1e-6)
    assert short["params"] == full["params"]

    moved = vf.walk_forward_forecasts(*changed, as_of, **kwargs)[0]
    assert moved["params"] == full["params"]
    assert moved["daily"]["realized"][0] != full["daily"]["realized"][0]
    for name, forecast in full["daily"]["forecasts"].items():  # the forecast made at D
        assert moved["daily"]["forecasts"][name][0] == pytest.approx(forecast[0], rel=1e-9)


def test_every_day_is_forecast_with_the_models_fitted_at_as_of():
    """``all_days``: the test days' forecasts among them; every forecast up to D unchanged
    when every return after D changes (a hedger trained before D reads them), later ones
    moved with the returns they read."""
    dates, closes = _garch_path(1400, seed=1)
    d, test_days, h = 1000, 30, 5
    kwargs = {"test_days": test_days, "horizon": h, "cnn_lstm": TINY, "resamples": 50,
              "all_days": True, **STAGES}  # fmt: skip
    full = vf.walk_forward_forecasts(dates, closes, [str(dates[d])], **kwargs)[0]
    _, changed = _cut_and_changed(dates, closes, d, d + test_days - 1 + h)
    moved = vf.walk_forward_forecasts(*changed, [str(dates[d])], **kwargs)[0]
    every = full["all_days"]
    first = int(np.searchsorted(dates, every["dates"][0]))
    assert every["dates"][-1] == dates[-1] and str(every["dates"][0]) == full["train"]["first"]
    at_d = d - first
    for name, forecast in every["forecasts"].items():
        test = forecast[at_d : at_d + test_days]
        np.testing.assert_allclose(test, full["daily"]["forecasts"][name], rtol=1e-6)
        known = np.isfinite(forecast[: at_d + 1])
        assert known[-300:].all()
        np.testing.assert_allclose(
            moved["all_days"]["forecasts"][name][: at_d + 1], forecast[: at_d + 1], rtol=1e-9
        )
        assert not np.allclose(
            moved["all_days"]["forecasts"][name][at_d + 2 :], forecast[at_d + 2 :]
        )
    # The CNN-LSTM has nothing to read before its first full window.
    assert np.isnan(every["forecasts"]["cnn_lstm"][0])
    json.dumps({k: v for k, v in full.items() if k != "all_days"})


def test_garch_beats_persistence_on_a_garch_path():
    dates, closes = _garch_path(4000, seed=2)
    result = vf.walk_forward_forecasts(
        dates, closes, [str(dates[2500])], test_days=1000, **BASELINES_ONLY
    )[0]
    assert result["params"]["garch"]["alpha"] == pytest.approx(0.1, abs=0.04)
    losses = result["losses"]
    assert losses["garch"]["qlike"] < losses["persistence"]["qlike"]
    row = vf.block_bootstrap_difference(
        vf.qlike(np.array(result["daily"]["realized"]), result["daily"]["forecasts"]["garch"]),
        vf.qlike(
            np.array(result["daily"]["realized"]), result["daily"]["forecasts"]["persistence"]
        ),
    )
    assert row.verdict == "better"


def _ar1(n: int, phi: float, rng: np.random.Generator, size: int = 1) -> np.ndarray:
    """``size`` AR(1) paths of length n with unit innovations, started stationary."""
    e = rng.standard_normal((size, n))
    x = np.empty((size, n))
    x[:, 0] = e[:, 0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_block_bootstrap_interval_holds_the_true_difference():
    rng = np.random.default_rng(5)
    true = 0.3
    n, phi = 250, 0.5
    paths = _ar1(n, phi, rng, size=200)
    base = rng.gamma(2.0, size=n)
    row = vf.block_bootstrap_difference(base + true + paths[0], base)
    assert row.low < true < row.high and row.windows == n and row.clusters == 25
    # Over many toys, the interval covers the truth about as often as it says.
    covered = [
        (lambda p: p.low < true < p.high)(
            vf.block_bootstrap_difference(true + x, np.zeros(n), resamples=400, seed=i)
        )
        for i, x in enumerate(paths)
    ]
    assert np.mean(covered) >= 0.85


@pytest.mark.parametrize(("iv_from", "reads_iv"), [(50, True), (200, False)])
def test_cnn_lstm_runs_small_deterministic_and_leaves_the_global_rng(iv_from, reads_iv):
    dates, closes = _garch_path(420, seed=3)
    iv = np.where(np.arange(420) >= iv_from, 0.2, np.nan)
    before = torch.get_rng_state()
    runs = [
        vf.walk_forward_forecasts(
            dates,
            closes,
            [str(dates[380])],
            test_days=20,
            cnn_lstm=TINY,
            iv=iv,
            resamples=50,
            **STAGES,
        )[0]
        for _ in range(2)
    ]
    assert torch.equal(torch.get_rng_state(), before)
    forecast = np.array(runs[0]["daily"]["forecasts"]["cnn_lstm"])
    assert forecast.shape == (20,) and np.all(np.isfinite(forecast)) and np.all(forecast > 0)
    assert runs[0]["daily"] == runs[1]["daily"]
    stats = runs[0]["params"]["cnn_lstm"]
    assert 1 <= stats["best_epoch"] <= stats["epochs"] <= TINY.max_epochs
    # Origins 31 (22 returns, then a 10-day window) to 375 (the last target ends at 380):
    # 345, the last 35 validate, and the 4 before them are embargoed (targets overlap).
    assert (stats["train_windows"], stats["val_windows"]) == (306, 35)
    # iv is read once the training windows hold MIN_IV_DAYS origins with it (287 vs 137).
    assert stats["reads_iv"] is reads_iv


def test_report_is_json_and_markdown():
    dates, closes = _garch_path(700, seed=4)
    results = vf.walk_forward_forecasts(
        dates, closes, [str(dates[400]), str(dates[500])], resamples=100, **BASELINES_ONLY
    )
    json.dumps(results)
    pooled = vf.pooled_comparison(results, resamples=100)
    assert pooled["differences"][0]["days"] == 2 * 63
    text = vf.markdown_report(results, pooled)
    assert text.count("\n") == 1 + 3 * len(vf.BASELINES)
    assert "reference" in text


def test_as_of_too_late_for_its_test_window_or_a_failed_garch_fit():
    dates, closes = _garch_path(700, seed=4)
    with pytest.raises(ValueError, match="test days"):
        vf.walk_forward_forecasts(dates, closes, [str(dates[-60])], **BASELINES_ONLY)
    with pytest.raises(ValueError, match="GARCH"):
        vf.walk_forward_forecasts(
            dates, closes, [str(dates[400])], fit_garch=lambda r: None, network=None
        )


def test_default_as_of_windows_lie_inside_sp500():
    dates, closes, iv = vf.daily_series(read_history("sp500"))
    assert np.isfinite(iv).sum() > 1000 and np.isnan(iv[0])
    assert str(dates[0]) == "1999-01-04" and str(dates[-1]) == "2018-12-31"
    results = vf.walk_forward_forecasts(dates, closes, resamples=10, **BASELINES_ONLY)
    assert [r["last_train_day"] for r in results] == list(vf.DEFAULT_AS_OF)
    assert all(r["test"]["days"] == 63 and r["test"]["target_end"] < "2019" for r in results)
