"""``hedge bench walkforward``: what each period fits on and tests on, and its report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.bench.walkforward import markdown, rolling_as_of, run
from hedge_pipeline.quant.vol_forecast import CnnLstmSettings
from hedge_pipeline.stages.market_data.sources.history import read_history

# The CNN-LSTM at its smallest: what is tested here is the bench, not the forecaster.
TINY = CnnLstmSettings(sequence_length=8, conv_channels=4, lstm_hidden=4, attention_heads=0,
                       embedding_dim=4, max_epochs=1)  # fmt: skip


@pytest.fixture(scope="module")
def period() -> dict:
    return run(as_of=["2008-06-30"], train_years=1.0, validation_weeks=13, test_months=3,
               epochs=2, num_threads=1, cnn_lstm=TINY)  # fmt: skip


def test_a_period_fits_before_as_of_and_tests_after_it(period: dict) -> None:
    (p,) = period["periods"]
    assert p["train"]["last_expiry"] < p["validation"]["first_expiry"]
    assert p["validation"]["last_expiry"] <= "2008-06-30"
    assert p["train"]["first_expiry"] >= "2007-06-30"
    # Test codes are listed after as_of and expire within 3 months.
    assert p["test"]["first_expiry"] >= "2008-07-01" and p["test"]["last_expiry"] <= "2008-09-30"
    assert p["test"]["episodes"] == 9 * p["test"]["codes"]
    names = set(p["metrics"])
    assert names == {"no_hedge", "bs_delta", "whalley_wilmott", "mv_delta", "deep_hedging",
                     "deep_hedging_with_garch", "deep_hedging_with_cnn_lstm"}  # fmt: skip
    assert set(p["forecast_inputs"]) == {"deep_hedging_with_garch", "deep_hedging_with_cnn_lstm"}
    assert p["vs_bs_delta"]["bs_delta"]["difference"] == 0.0
    for row in p["vs_bs_delta"].values():
        assert row["low"] <= row["difference"] <= row["high"] or row["clusters"] < 3


def test_the_vol_forecasts_share_the_dates_and_test_what_follows(period: dict) -> None:
    (forecast,) = period["vol_forecasts"]["periods"]
    assert forecast["as_of"] == "2008-06-30" and forecast["last_train_day"] == "2008-06-30"
    assert forecast["train"]["last"] < forecast["test"]["first"] <= "2008-06-30"
    assert forecast["test"]["target_end"] <= "2008-09-30"
    assert set(forecast["losses"]) == {"persistence", "ewma", "garch", "har", "cnn_lstm"}
    assert "daily" not in forecast


def test_each_forecast_input_is_a_retrained_hedger_against_the_one_without(period: dict) -> None:
    """The same episodes, seed and budget with one more input: pooled, each against the hedger
    without it, and the CNN-LSTM's against GARCH's (the strongest vol baseline)."""
    (p,) = period["periods"]
    without = p["metrics"]["deep_hedging"]
    for name in ("deep_hedging_with_garch", "deep_hedging_with_cnn_lstm"):
        assert p["metrics"][name]["es10"] != without["es10"]  # it read something
    pairs = [(d["hedger_name"], d["builds_on"]) for d in period["forecast_inputs"]]
    assert pairs == [
        ("deep_hedging_with_garch", "deep_hedging"),
        ("deep_hedging_with_cnn_lstm", "deep_hedging"),
        ("deep_hedging_with_cnn_lstm", "deep_hedging_with_garch"),
    ]
    garch = period["forecast_inputs"][0]
    assert garch["hedger"] == pytest.approx(period["pooled"]["vs_bs_delta"][pairs[0][0]]["hedger"])
    assert garch["difference"] == pytest.approx(garch["hedger"] - garch["baseline"])
    assert period["settings"]["forecast_inputs"] == ["garch", "cnn_lstm"]


def test_a_decision_bar_without_a_forecast_is_named() -> None:
    from hedge_pipeline.bench.walkforward import _on_bars
    from hedge_pipeline.hedging.history_episodes import history_episodes

    t0 = datetime(2008, 10, 1, 20, tzinfo=UTC)
    ts = [t0 + timedelta(days=i) for i in range(4)]
    rows = pl.DataFrame({
        "weekly_code": "X-2008-10-04", "option_symbol": "X_C100", "option_type": "C", "ts": ts,
        "strike": 100.0, "underlying_price": 100.0, "tau": [3 / 365, 2 / 365, 1 / 365, 0.0],
        "mid": 1.0, "iv": 0.2, "iv_status": "ok", "atm_iv": 0.2, "expiry": ts[-1]})  # fmt: skip
    episodes = history_episodes(rows, n_steps=3)
    days = np.array(["2008-10-01", "2008-10-02", "2008-10-03"], dtype="datetime64[D]")
    found = _on_bars(episodes, (days, np.array([0.1, 0.2, 0.3])), "garch")
    assert found[0, :, 0].tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="no garch forecast on 2008-10-02"):
        _on_bars(episodes, (days[[0, 2]], np.array([0.1, 0.3])), "garch")
    with pytest.raises(ValueError, match="no cnn_lstm forecast on 2008-10-01"):
        _on_bars(episodes, (days, np.array([np.nan, 0.2, 0.3])), "cnn_lstm")


def test_an_unknown_forecast_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"forecast inputs \['vix'\]: the forecasters are"):
        run(forecast_inputs=["vix"])


def test_the_report_is_json_and_markdown(period: dict) -> None:
    json.dumps(period)
    text = markdown(period)
    assert "| 2008-06-30 |" in text and "Δ deep_hedging" in text
    assert "| deep hedger reading a forecast | builds on |" in text
    assert "| deep_hedging_with_cnn_lstm | deep_hedging_with_garch |" in text
    assert f"Δ vs {period['pooled']['strongest_baseline']}" in text
    assert "cnn_lstm" in text and "qlike" in text.lower()


def test_nothing_after_as_of_changes_what_a_period_fits(tmp_path: Path) -> None:
    """The history cut a month after the test window, and the same history with every close
    after as_of replaced: the fitted minimum-variance delta and the deep hedger's training are
    identical; only the test differs. (The fit's inputs are bitwise equal; LAPACK's least
    squares is reproducible only to the last bits across allocations, hence ``approx``.)"""
    history = read_history("sp500")
    day = history.ts.astype("datetime64[us]").astype("datetime64[D]")
    keep = day <= np.datetime64("2008-10-31")
    close = history.close[keep].copy()
    frame = pl.DataFrame({"date": day[keep].astype(str), "close": close})
    # One file name (the symbol, which seeds the quotes' noise) in two folders.
    (tmp_path / "cut").mkdir(), (tmp_path / "moved").mkdir()
    frame.write_csv(tmp_path / "cut" / "spx.csv")
    after = day[keep] > np.datetime64("2008-06-30")
    close[after] = close[after] * np.exp(np.linspace(0.0, 0.3, int(after.sum())))
    frame.with_columns(close=pl.Series(close)).write_csv(tmp_path / "moved" / "spx.csv")
    kwargs = dict(as_of=["2008-06-30"], train_years=1.0, validation_weeks=13,
                  test_months=3, epochs=2, num_threads=1, vol_forecasts=False,
                  cnn_lstm=TINY)  # fmt: skip
    cut = run(str(tmp_path / "cut" / "spx.csv"), **kwargs)["periods"][0]
    moved = run(str(tmp_path / "moved" / "spx.csv"), **kwargs)["periods"][0]
    assert cut["mv_delta_coefficients"] == pytest.approx(moved["mv_delta_coefficients"], rel=1e-12)
    assert cut["deep_hedging"]["best_epoch"] == moved["deep_hedging"]["best_epoch"]
    # The hedgers reading a forecast read the same forecasts on every training bar.
    for name, fitted in cut["forecast_inputs"].items():
        same = moved["forecast_inputs"][name]
        assert (fitted["epochs"], fitted["best_epoch"]) == (same["epochs"], same["best_epoch"])
        assert cut["metrics"][name] != moved["metrics"][name]
    assert cut["train"] == moved["train"] and cut["validation"] == moved["validation"]
    assert cut["metrics"] != moved["metrics"]


def test_the_default_schedule_tiles_the_history() -> None:
    dates = rolling_as_of(np.datetime64("1999-01-04"), np.datetime64("2018-12-31"), 4.0, 6)
    assert len(dates) == 31 and dates[0] == "2003-06-30" and dates[-1] == "2018-06-30"
    assert {"2008-06-30", "2011-06-30", "2015-06-30", "2015-12-31", "2017-12-31"} <= set(dates)


def test_a_history_too_short_for_one_period_says_so(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    pl.DataFrame(
        {"date": [f"2010-01-{d:02d}" for d in range(4, 30)], "close": np.linspace(100, 110, 26)}
    ).write_csv(path)
    with pytest.raises(ValueError, match=r"shorter than 4\.0 training years"):
        run(str(path))


def test_a_garch_fit_on_its_persistence_bound_falls_back_to_arch() -> None:
    """NASDAQ 1999–2005 is nearly integrated: the targeted fit gives up, arch's fit does not."""
    from hedge_pipeline.bench.walkforward import _garch_or_arch
    from hedge_pipeline.quant.vol_forecast import daily_series, log_returns
    from hedge_pipeline.stages.market_data.sources.history import fit_garch

    dates, closes, _ = daily_series(read_history("nasdaq"))
    end = int(np.searchsorted(dates, np.datetime64("2006-01-01")))
    returns = 100.0 * log_returns(closes)[1:end]
    assert fit_garch(returns) is None
    alpha, beta = _garch_or_arch(returns)
    assert 0.0 < alpha < 0.2 and beta > 0.8 and alpha + beta < 1.0
