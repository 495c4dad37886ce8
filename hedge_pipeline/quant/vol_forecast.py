"""Realized-volatility forecasts walked forward on a daily index history.

The CNN-LSTM stage claims to forecast realized volatility. That claim means something only
beside the forecasts a desk would use instead, scored on the same days, with losses that rank
variance forecasts correctly when the "truth" is itself a noisy proxy, and with an interval
that says whether a difference is more than the luck of one quarter. This module does that on
real daily closes (the ``history`` source's embedded sp500), with nothing fitted on what it is
scored on.

**Composition.** ``quant`` sits below the stages (``test_import_cycles``: a shared library
never imports a stage), so the two stage parts used here come in as arguments: the history
source's GARCH fit (``fit_garch``) and the CNN-LSTM stage's network. A caller (a bench, a
shell) composes them::

    from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig
    from hedge_pipeline.stages.market_data.sources.history import fit_garch, read_history

    def network(settings, n_features):
        return CnnLstm(CnnLstmConfig(n_features=n_features, n_targets=1, **settings.sizes))

    dates, closes, iv = daily_series(read_history("sp500"))
    results = walk_forward_forecasts(dates, closes, fit_garch=fit_garch, network=network, iv=iv)
    print(markdown_report(results, pooled_comparison(results)))

**Target.** At the close of day t, the annualized realized variance of the next h daily log
returns, RV_t = 252/h · Σ_{k=1..h} r²_{t+k} (h = 5, a trading week). Without intraday data the
squared daily return is the day's variance proxy: unbiased, noisy. A forecast made at t reads
only returns up to and including r_t.

**Walk-forward.** An as-of date D (its last trading day on or before it) splits the series.
Parameters are fitted only on rows whose target window ends on or before D (origins t ≤ D − h
trading days; with ``train_years``, only the origins of the last that many years before D) and
then frozen. The test rows are the ``test_days`` origins D, D+1, …: the forecast made at D's
close is the first whose target lies wholly after D. Inputs keep updating with each test day's
returns, as they would in production. So nothing after an origin enters its forecast and
nothing after D enters a parameter; ``test_vol_forecast`` holds the forecasts identical when the
series is cut right after the last test target, and the parameters identical when every return
after D is changed. The same frozen models also forecast at every origin from the first
training one to the series' end (``all_days``): a hedger trained before D and tested after it
reads them as an input (``bench.walkforward``), each made with the returns up to its origin.

**Forecasters** (annualized variance, decimal returns):

* ``persistence``: the realized variance of the last h returns (the random walk on RV).
* ``ewma``: RiskMetrics, σ²_{t+1} = λσ²_t + (1 − λ)r²_t with λ = 0.94 and its flat term
  structure; nothing fitted (the recursion starts at r²_1, forgotten within weeks).
* ``garch``: GARCH(1,1) with zero mean and variance targeting, (α, β) by ``fit_garch`` (the
  history source's quasi-ML fit, on percent returns) on the returns up to D, the long-run level
  v̄ their mean square. The variance filter runs from the first training return with those
  parameters through the test days; the forecast is the mean of the h expected daily variances,
  v̄ + (σ²_{t+1} − v̄)·(1 − φ^h)/(h(1 − φ)), φ = α + β. A fit that fails stops the run
  (a silent fallback would score a model nobody fitted).
* ``har``: HAR-RV (Corsi 2009), OLS of RV_t on a constant and the daily (252·r²_t), weekly
  (5-day mean) and monthly (22-day mean) realized variance, on the training rows. Corsi uses
  intraday RV; daily squared returns make the regressors noisier, which HAR's averaging tames.
  Predictions are floored at the smallest training target (a variance below anything seen in
  the training years is not a forecast, and QLIKE punishes a forecast near 0 without bound).
* ``cnn_lstm``: the project's ``CnnLstm`` (small: ``CnnLstmSettings``) on windows of
  ``sequence_length`` days of inputs: the log return, its absolute value, log(RV + 10⁻⁶)
  daily / weekly / monthly, and, where an ``iv`` series is given, log(iv²) (0 where missing,
  after standardizing) with a 0/1 availability flag, so one network reads the years with and
  without an implied vol (sp500 has the VIX from 2014 only). The iv columns are read only when
  the training windows (before the validation tail) hold at least ``MIN_IV_DAYS`` origins
  with an iv: a network that never saw the flag at 1 would meet it first in validation and
  test (on sp500 only the 2018 as-of qualifies; at 2015-07-31 the VIX starts inside the
  validation tail). The target is log RV_t, standardized: variance is heavy-tailed, and in
  logs the MSE loss is about relative errors, as QLIKE scores them. The last
  ``val_fraction`` of the training origins is a validation tail for early stopping, embargoed
  so that no training target overlaps a validation target (training origins ≤ the first
  validation origin − h). Adam, a fixed seed, at most ``max_epochs``; the best validation
  epoch is kept. A plain loop, not ``harness.trainer.fit``: that one reseeds the global RNGs,
  installs signal handlers and writes checkpoints every epoch, machinery for long unattended
  runs, not a half-minute fit inside a walk-forward. The forecast is exp(μ̂ + s²/2), μ̂ the
  predicted mean log RV and s² the variance of the log residuals on the validation tail:
  exp(μ̂) is the conditional median, both losses are minimized by the conditional mean, and
  the lognormal correction estimates it (the residuals' mean is not added: that would refit
  the level to the validation years). Input and target scalings use the training windows only.

**Scores.** Per test day, ``mse`` (of the annualized variance) and ``qlike`` (Patton 2011,
RV/σ̂² − log(RV/σ̂²) − 1): both rank forecasts as the true conditional variance would even
when RV is a noisy proxy; QLIKE weighs relative errors and is not ruled by a crash's few days.

**Intervals.** Each forecaster against the best baseline of the window (the lowest mean QLIKE
of persistence, ewma, garch and har, chosen on the test days themselves: that makes the bar
harder for the CNN-LSTM, never easier) and against ``har``: the mean difference of each loss
(MSE and QLIKE) with a moving-block bootstrap interval (blocks of ``block`` days: the
overlapping 5-day targets and vol clustering make daily losses dependent), the same blocks
drawn for every pair (common random numbers). A ``PairedDifference`` holds each
(``hedging.comparison``'s: its ``hedger`` is the forecaster's mean loss, ``windows`` the days,
``clusters`` the blocks per resample); its verdict is ``better`` / ``worse`` when the interval
excludes 0, else ``undecided``. ``pooled_comparison`` does the same over the days of every as-of.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hedge_pipeline.hedging.comparison import PairedDifference
from hedge_pipeline.quant.market_sim import FloatArray
from hedge_pipeline.runtime.markdown import markdown_table

__all__ = [
    "BASELINES",
    "DEFAULT_AS_OF",
    "DEFAULT_CNN_LSTM",
    "LOSSES",
    "MIN_IV_DAYS",
    "CnnLstmSettings",
    "DailyHistory",
    "GarchFit",
    "NetworkFactory",
    "block_bootstrap_difference",
    "cnn_inputs",
    "cnn_lstm_forecast",
    "compare_forecasts",
    "daily_series",
    "ewma_variance",
    "fit_har",
    "garch_mean_variance",
    "garch_variance",
    "har_features",
    "log_returns",
    "markdown_report",
    "mse",
    "persistence",
    "pooled_comparison",
    "predict_har",
    "qlike",
    "realized_variance",
    "walk_forward_forecasts",
]

TRADING_DAYS = 252
HORIZON = 5
HAR_LAGS = (1, 5, 22)  # daily, weekly, monthly
HAR_COEFFICIENTS = ("const", "daily", "weekly", "monthly")
EWMA_LAMBDA = 0.94
LOG_FLOOR = 1e-6  # added to an input variance before its log (a day without a move: r² = 0)
_BASE_INPUTS = 5  # the CNN-LSTM's inputs every day has once 22 returns exist
MIN_IV_DAYS = 250  # training origins with an iv before the CNN-LSTM reads the iv columns
BASELINES = ("persistence", "ewma", "garch", "har")
DEFAULT_AS_OF = ("2008-08-29", "2011-06-30", "2015-07-31", "2015-12-31", "2018-01-12")
_US_PER_DAY = 86_400 * 1_000_000


# --------------------------------------------------------------------------- data


class DailyHistory(Protocol):
    """What ``daily_series`` reads of a history (``read_history``'s ``History``)."""

    daily: bool
    ts: np.ndarray
    close: FloatArray
    iv: FloatArray


def daily_series(history: DailyHistory) -> tuple[np.ndarray, FloatArray, FloatArray]:
    """(dates ``datetime64[D]``, closes, iv) of a daily history, iv NaN where none.

    Daily bars are stamped at the New York close (20:00 or 21:00 UTC), so the UTC date is the
    trading date. Intraday bars are refused: take their ``daily_closes`` first.
    """
    if not history.daily:
        raise ValueError("an intraday history: select its daily closes (daily_closes) first")
    dates = (np.asarray(history.ts) // _US_PER_DAY).astype("datetime64[D]")
    return dates, np.asarray(history.close), np.asarray(history.iv)


def log_returns(closes: FloatArray) -> FloatArray:
    """r_t = log(p_t / p_{t−1}), aligned with the closes (r_0 is NaN).

    >>> log_returns(np.array([100.0, 110.0, 99.0])).round(4).tolist()
    [nan, 0.0953, -0.1054]
    """
    closes = np.asarray(closes, dtype=np.float64)
    return np.concatenate([[np.nan], np.log(closes[1:] / closes[:-1])])


# --------------------------------------------------------------------------- target and losses


def realized_variance(returns: FloatArray, horizon: int = HORIZON) -> FloatArray:
    """RV_t = 252/h · Σ_{k=1..h} r²_{t+k}: the target at each origin t (NaN where the window
    runs past the data). ``returns`` aligned with the closes, as ``log_returns``.

    >>> r = np.array([np.nan, 0.01, -0.01, 0.02, 0.0])
    >>> realized_variance(r, 2).round(4).tolist()  # 126·(1e-4 + 1e-4), 126·(1e-4 + 4e-4), ...
    [0.0252, 0.063, 0.0504, nan, nan]
    """
    r2 = np.asarray(returns, dtype=np.float64) ** 2
    out = np.full(r2.size, np.nan)
    if r2.size > horizon:
        windows = np.lib.stride_tricks.sliding_window_view(r2[1:], horizon)
        out[: windows.shape[0]] = TRADING_DAYS / horizon * windows.sum(axis=1)
    return out


def _trailing_mean(r2: FloatArray, window: int) -> FloatArray:
    """Mean of the ``window`` values up to and including each day (NaN while any is missing)."""
    out = np.full(r2.size, np.nan)
    if r2.size >= window:
        out[window - 1 :] = np.lib.stride_tricks.sliding_window_view(r2, window).mean(axis=1)
    return out


def mse(realized: FloatArray, forecast: FloatArray) -> FloatArray:
    """Squared error of a variance forecast, per day.

    >>> mse(np.array([0.04, 0.09]), np.array([0.05, 0.09])).round(6).tolist()
    [0.0001, 0.0]
    """
    return (np.asarray(realized) - np.asarray(forecast)) ** 2


def qlike(realized: FloatArray, forecast: FloatArray) -> FloatArray:
    """Patton's (2011) QLIKE, RV/σ̂² − log(RV/σ̂²) − 1, per day: 0 for a perfect forecast, and
    under-forecasting costs more than over-forecasting by the same ratio.

    >>> qlike(np.array([0.04, 0.04, 0.04]), np.array([0.04, 0.02, 0.08])).round(4).tolist()
    [0.0, 0.3069, 0.1931]
    """
    ratio = np.asarray(realized) / np.asarray(forecast)
    return ratio - np.log(ratio) - 1.0


LOSSES = {"mse": mse, "qlike": qlike}


# --------------------------------------------------------------------------- baselines


def persistence(returns: FloatArray, horizon: int = HORIZON) -> FloatArray:
    """The realized variance of the last ``horizon`` returns, 252/h · Σ_{k=0..h−1} r²_{t−k}.

    >>> persistence(np.array([np.nan, 0.01, 0.03, 0.02]), 2).round(4).tolist()
    [nan, nan, 0.126, 0.1638]
    """
    return TRADING_DAYS * _trailing_mean(np.asarray(returns, dtype=np.float64) ** 2, horizon)


def ewma_variance(returns: FloatArray, lam: float = EWMA_LAMBDA) -> FloatArray:
    """RiskMetrics' daily variance for the next day after each return, σ²_{t+1} = λσ²_t +
    (1 − λ)r²_t, started at σ²_2 = r²_1 (NaN at t = 0). Not annualized.

    >>> ewma_variance(np.array([np.nan, 0.01, 0.03]), 0.9).round(6).tolist()
    [nan, 0.0001, 0.00018]
    """
    from scipy.signal import lfilter

    r2 = np.asarray(returns, dtype=np.float64) ** 2
    out = np.full(r2.size, np.nan)
    if r2.size > 1:
        drive = (1.0 - lam) * r2[1:]
        drive[0] = r2[1]
        out[1:] = lfilter([1.0], [1.0, -lam], drive)
    return out


def garch_variance(returns: FloatArray, alpha: float, beta: float, long_var: float) -> FloatArray:
    """The GARCH(1,1) filter with fixed parameters: ``out[t]`` = σ²_{t+1}, the variance
    forecast for the day after return t, σ²_{t+1} = ω + α·r²_t + β·σ²_t, ω = v̄·(1 − α − β),
    started at σ²_0 = v̄ (as ``fit_garch`` starts its likelihood). Units of ``returns``².

    >>> garch_variance(np.array([1.0, 3.0]), 0.1, 0.8, 2.0).round(4).tolist()
    [1.9, 2.62]
    """
    from scipy.signal import lfilter

    r2 = np.asarray(returns, dtype=np.float64) ** 2
    drive = long_var * (1.0 - alpha - beta) + alpha * r2
    drive[0] += beta * long_var
    return lfilter([1.0], [1.0, -beta], drive)


def garch_mean_variance(
    next_var: FloatArray, alpha: float, beta: float, long_var: float, horizon: int = HORIZON
) -> FloatArray:
    """Mean of the expected daily variances over the next ``horizon`` days given σ²_{t+1}:
    E[σ²_{t+k}] = v̄ + φ^{k−1}(σ²_{t+1} − v̄), φ = α + β, averaged over k = 1..h.

    >>> garch_mean_variance(np.array([4.0, 1.0]), 0.1, 0.8, 1.0, 2).round(4).tolist()
    [3.85, 1.0]
    """
    phi = alpha + beta
    weight = np.mean(phi ** np.arange(horizon))
    return long_var + (np.asarray(next_var, dtype=np.float64) - long_var) * weight


def har_features(returns: FloatArray) -> FloatArray:
    """HAR's regressors at each origin: annualized daily, weekly (5-day) and monthly (22-day)
    realized variance up to and including the origin's return. Shape: (n,) → (n, 3), NaN
    where a window reaches before the first return.

    >>> r = np.full(30, 0.01)
    >>> har_features(r)[[0, 4, 29]].round(4).tolist()
    [[0.0252, nan, nan], [0.0252, 0.0252, nan], [0.0252, 0.0252, 0.0252]]
    """
    r2 = np.asarray(returns, dtype=np.float64) ** 2
    return np.column_stack([TRADING_DAYS * _trailing_mean(r2, lag) for lag in HAR_LAGS])


def fit_har(features: FloatArray, target: FloatArray) -> FloatArray:
    """OLS coefficients (constant, daily, weekly, monthly) of ``target`` on ``features``.

    Shape: (n, 3), (n,) → (4,).

    >>> x = np.array([[1.0, 2.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    >>> fit_har(x, 0.5 + x @ np.array([0.2, 0.3, 0.4])).round(6).tolist()
    [0.5, 0.2, 0.3, 0.4]
    """
    design = np.column_stack([np.ones(len(target)), features])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return coef


def predict_har(coef: FloatArray, features: FloatArray, floor: float) -> FloatArray:
    """HAR forecasts, floored at ``floor``.

    >>> predict_har(np.array([0.01, 0.5, 0.3, 0.2]), np.array([[0.04, 0.04, 0.04]]), 0.0)
    array([0.05])
    """
    return np.maximum(coef[0] + features @ coef[1:], floor)


# --------------------------------------------------------------------------- CNN-LSTM


@dataclass(frozen=True)
class CnnLstmSettings:
    """The CNN-LSTM's size and training budget: small, so one as-of trains in well under a
    minute on one CPU thread (sizes chosen for time, not tuned on any test window). The sizes
    are ``CnnLstmConfig``'s fields (``sizes``); the network itself comes from the caller's
    ``NetworkFactory``."""

    sequence_length: int = 44
    conv_channels: int = 16
    lstm_hidden: int = 32
    attention_heads: int = 2
    embedding_dim: int = 16
    dropout: float = 0.1
    batch_size: int = 128
    lr: float = 1e-3
    max_epochs: int = 15
    patience: int = 3
    val_fraction: float = 0.1
    grad_clip: float = 1.0

    @property
    def sizes(self) -> dict[str, int | float]:
        """The network's sizes, as ``CnnLstmConfig`` keywords (with ``n_features`` and
        ``n_targets=1``, a config)."""
        names = ("sequence_length", "conv_channels", "lstm_hidden", "attention_heads")
        return {name: getattr(self, name) for name in (*names, "embedding_dim", "dropout")}


DEFAULT_CNN_LSTM = CnnLstmSettings()

GarchFit = Callable[[FloatArray], tuple[float, float] | None]
"""(α, β) of a variance-targeted GARCH(1,1) from percent returns, None when the fit fails:
``stages.market_data.sources.history.fit_garch``."""
NetworkFactory = Callable[[CnnLstmSettings, int], nn.Module]
"""A network of the settings' sizes for ``n_features`` inputs, (B, T, F) → (B, 1): the
``CnnLstm`` of ``stages.cnn_lstm.model``, ``CnnLstm(CnnLstmConfig(n_features=n, n_targets=1,
**settings.sizes))``."""


def cnn_inputs(returns: FloatArray, iv: FloatArray | None = None) -> tuple[FloatArray, int]:
    """The network's daily inputs (module docstring) and how many leading columns are scaled:
    log return, |return|, log RV daily / weekly / monthly, then with ``iv`` log(iv²) (scaled)
    and its 0/1 availability flag (not scaled). Shape: (n,) → (n, 5) or (n, 7).
    """
    r = np.asarray(returns, dtype=np.float64)
    columns = [r, np.abs(r), *np.log(har_features(r) + LOG_FLOOR).T]
    if iv is None:
        return np.column_stack(columns), len(columns)
    iv = np.asarray(iv, dtype=np.float64)
    known = np.isfinite(iv)
    log_iv2 = np.where(known, np.log(np.where(known, iv, 1.0) ** 2), np.nan)
    return np.column_stack([*columns, log_iv2, known.astype(np.float64)]), len(columns) + 1


def _scale(rows: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mean and std of each column of ``rows``, ignoring NaN (0 and 1 for a column never
    seen, a std of 1 for a constant one)."""
    mean = np.zeros(rows.shape[1])
    std = np.ones(rows.shape[1])
    for j in range(rows.shape[1]):
        seen = rows[:, j][np.isfinite(rows[:, j])]
        if seen.size:
            mean[j] = seen.mean()
            std[j] = seen.std() if seen.std() > 0 else 1.0
    return mean, std


def cnn_lstm_forecast(
    inputs: FloatArray,
    n_scaled: int,
    target: FloatArray,
    train_origins: np.ndarray,
    test_origins: np.ndarray,
    horizon: int,
    settings: CnnLstmSettings,
    network: NetworkFactory,
    seed: int,
) -> tuple[FloatArray, dict[str, float | int]]:
    """Train on windows ending at ``train_origins`` (their last ``val_fraction`` the embargoed
    validation tail) and forecast the variance at ``test_origins`` (module docstring; NaN at
    an origin with fewer than ``sequence_length`` days of inputs behind it).
    Returns the forecasts and what was fitted: whether the iv columns were read, epochs run,
    the best epoch, its validation MSE (standardized log target) and the bias correction's s²
    (log units).

    The global torch RNG is used for the initial weights and dropout inside ``fork_rng``, so
    the caller's RNG state is as before; shuffling uses its own generator.
    """
    length = settings.sequence_length
    first_origin = int(np.flatnonzero(np.isfinite(inputs[:, :_BASE_INPUTS]).all(axis=1))[0])
    train_origins = train_origins[train_origins >= first_origin + length - 1]
    n_val = max(1, math.ceil(settings.val_fraction * train_origins.size))
    val = train_origins[-n_val:]
    fit = train_origins[train_origins <= val[0] - horizon]
    if fit.size < 2:
        raise ValueError(f"the CNN-LSTM has {fit.size} training windows before its validation")
    reads_iv = inputs.shape[1] > _BASE_INPUTS and inputs[fit, -1].sum() >= MIN_IV_DAYS
    if not reads_iv:
        inputs, n_scaled = inputs[:, :_BASE_INPUTS], _BASE_INPUTS

    # Scalings from the days the training windows read, never later ones.
    read = inputs[fit[0] - length + 1 : fit[-1] + 1, :n_scaled]
    mean, std = _scale(read)
    scaled = inputs.copy()
    scaled[:, :n_scaled] = np.nan_to_num((inputs[:, :n_scaled] - mean) / std, nan=0.0)
    log_target = np.log(np.maximum(target, LOG_FLOOR))
    y_mean, y_std = float(log_target[fit].mean()), float(log_target[fit].std())
    windows = np.lib.stride_tricks.sliding_window_view(scaled, length, axis=0)  # (n', F, L)

    def x_of(origins: np.ndarray) -> torch.Tensor:
        x = windows[origins - length + 1].transpose(0, 2, 1)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    def y_of(origins: np.ndarray) -> torch.Tensor:
        y = (log_target[origins] - y_mean) / y_std
        return torch.from_numpy(y.astype(np.float32)).unsqueeze(1)

    x_fit, y_fit, x_val, y_val = x_of(fit), y_of(fit), x_of(val), y_of(val)
    shuffle = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = network(settings, inputs.shape[1])
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        best, best_epoch, best_state, epochs = math.inf, 0, copy.deepcopy(model.state_dict()), 0
        for epoch in range(1, settings.max_epochs + 1):
            epochs = epoch
            model.train()
            for index in torch.randperm(fit.size, generator=shuffle).split(settings.batch_size):
                optimizer.zero_grad()
                F.mse_loss(model(x_fit[index]), y_fit[index]).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
                optimizer.step()
            model.eval()
            with torch.no_grad():
                val_loss = float(F.mse_loss(model(x_val), y_val))
            if val_loss < best:
                best, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= settings.patience:
                break
        model.load_state_dict(best_state)
        model.eval()
        readable = test_origins >= first_origin + length - 1
        test_pred = np.full(test_origins.size, np.nan)
        with torch.no_grad():
            val_pred = model(x_val).double().numpy()[:, 0] * y_std + y_mean
            predicted = model(x_of(test_origins[readable])).double().numpy()[:, 0]
            test_pred[readable] = predicted * y_std + y_mean
    s2 = float(np.var(log_target[val] - val_pred))
    stats = {
        "reads_iv": bool(reads_iv),
        "train_windows": int(fit.size),
        "val_windows": int(val.size),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "val_mse": best,
        "log_residual_var": s2,
    }
    return np.exp(test_pred + 0.5 * s2), stats


# --------------------------------------------------------------------------- intervals


def block_bootstrap_difference(
    loss: FloatArray,
    baseline_loss: FloatArray,
    *,
    block: int = 10,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Mean of ``loss`` − ``baseline_loss`` (paired by day) with a moving-block bootstrap
    percentile interval (Künsch 1989): each resample strings ⌈n/block⌉ blocks of ``block``
    consecutive days, starting anywhere, and cuts it to n days. The same ``seed`` draws the
    same blocks for every pair of the same length.

    >>> rng = np.random.default_rng(0)
    >>> base = rng.gamma(2.0, size=300)
    >>> row = block_bootstrap_difference(base - 0.5, base, resamples=200)
    >>> round(row.difference, 6), row.verdict, row.clusters
    (-0.5, 'better', 30)
    """
    loss = np.asarray(loss, dtype=np.float64)
    difference = loss - np.asarray(baseline_loss, dtype=np.float64)
    n = difference.size
    block = min(block, n)
    blocks = math.ceil(n / block)
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(resamples, blocks))
    days = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(difference[days].mean(axis=1), [tail, 1.0 - tail])
    return PairedDifference(
        hedger=float(loss.mean()),
        baseline=float(np.mean(baseline_loss)),
        difference=float(difference.mean()),
        low=float(low),
        high=float(high),
        windows=n,
        clusters=blocks,
        level=level,
    )


def compare_forecasts(
    realized: FloatArray,
    forecasts: Mapping[str, FloatArray],
    *,
    block: int = 10,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean losses of every forecaster, the best baseline by mean QLIKE, and every forecaster
    against it and against ``har`` (when present) in both losses (module docstring).

    Returns ``{"losses": {name: {"mse", "qlike"}}, "best_baseline": name, "differences":
    [{"forecaster", "baseline", "metric", "loss", "baseline_loss", "difference", "relative",
    "low", "high", "verdict", "days", "blocks"}, ...]}``.
    """
    losses = {
        name: {metric: fn(realized, forecast) for metric, fn in LOSSES.items()}
        for name, forecast in forecasts.items()
    }
    means = {
        name: {metric: float(values.mean()) for metric, values in by_metric.items()}
        for name, by_metric in losses.items()
    }
    best = min((n for n in BASELINES if n in means), key=lambda n: means[n]["qlike"])
    references = [best] + (["har"] if "har" in means and best != "har" else [])
    differences = []
    for reference in references:
        for name in forecasts:
            if name == reference:
                continue
            for metric in LOSSES:
                row = block_bootstrap_difference(
                    losses[name][metric],
                    losses[reference][metric],
                    block=block,
                    resamples=resamples,
                    seed=seed,
                )
                differences.append(
                    {
                        "forecaster": name,
                        "baseline": reference,
                        "metric": metric,
                        "loss": row.hedger,
                        "baseline_loss": row.baseline,
                        "difference": row.difference,
                        "relative": row.relative,
                        "low": row.low,
                        "high": row.high,
                        "verdict": row.verdict,
                        "days": row.windows,
                        "blocks": row.clusters,
                    }
                )
    return {"losses": means, "best_baseline": best, "differences": differences}


# --------------------------------------------------------------------------- walk-forward


def _as_day(value: str | date | datetime | np.datetime64) -> np.datetime64:
    return np.datetime64(value.date() if isinstance(value, datetime) else value, "D")


def walk_forward_forecasts(
    dates: np.ndarray,
    closes: FloatArray,
    as_of_dates: Sequence[str | date | np.datetime64] = DEFAULT_AS_OF,
    *,
    fit_garch: GarchFit,
    network: NetworkFactory | None,
    test_days: int = 63,
    horizon: int = HORIZON,
    train_years: float | None = None,
    seed: int = 0,
    cnn_lstm: CnnLstmSettings = DEFAULT_CNN_LSTM,
    iv: FloatArray | None = None,
    block: int = 10,
    resamples: int = 2000,
    all_days: bool = False,
) -> list[dict[str, Any]]:
    """Fit every forecaster as of each date, forecast the next ``test_days`` origins, score
    them (module docstring). ``dates`` (``datetime64[D]``) and ``closes`` sorted by date;
    ``iv`` (annualized implied vol, NaN where unknown) feeds the CNN-LSTM only. The GARCH fit
    and the network are the stages' (``GarchFit``, ``NetworkFactory``), passed in because
    ``quant`` sits below the stages; ``network=None`` leaves the CNN-LSTM out.

    One JSON-able dict per as-of: ``as_of`` (asked), ``last_train_day`` (D itself: the last
    trading day on or before it), ``train`` (first and last origin, rows), ``test`` (first and
    last origin, days, the last day a target reads), ``horizon``, ``params`` (per fitted
    forecaster), then ``compare_forecasts``'s ``losses``, ``best_baseline`` and
    ``differences`` and ``daily`` (origin dates, realized variance and every forecast). With
    ``all_days``, also ``all_days``: ``dates`` and every forecaster's ``forecasts`` at every
    origin from the first training one to the series' end, as arrays (not JSON: for a caller
    to feed on; NaN where a forecaster has too few days behind an origin).
    """
    dates = np.asarray(dates).astype("datetime64[D]")
    closes = np.asarray(closes, dtype=np.float64)
    if dates.size != closes.size or np.any(np.diff(dates) <= np.timedelta64(0, "D")):
        raise ValueError("dates and closes must have the same length, dates strictly rising")
    returns = log_returns(closes)
    target = realized_variance(returns, horizon)
    har_x = har_features(returns)
    ewma = TRADING_DAYS * ewma_variance(returns)
    past = persistence(returns, horizon)
    inputs, n_scaled = cnn_inputs(returns, iv)

    results = []
    for asked in as_of_dates:
        day = _as_day(asked)
        d = int(np.searchsorted(dates, day, side="right")) - 1
        if d < 0:
            raise ValueError(f"as-of {day} is before the first date {dates[0]}")
        test = np.arange(d, d + test_days)
        if test[-1] + horizon >= dates.size:
            raise ValueError(
                f"as-of {day}: {test_days} test days and their {horizon}-day targets need data "
                f"to {test_days + horizon - 1} trading days after {dates[d]}; it ends {dates[-1]}"
            )
        start = 1
        if train_years is not None:
            since = day - np.timedelta64(round(train_years * 365.25), "D")
            start = max(1, int(np.searchsorted(dates, since, side="left")))
        rows = np.arange(max(start, HAR_LAGS[-1]), d - horizon + 1)  # targets end ≤ D
        if rows.size < 250:
            raise ValueError(f"as-of {day}: {rows.size} training rows, fewer than 250")

        # The test days are scored; with all_days every forecaster also forecasts at every
        # origin from the first training one on, and all of them are returned.
        origins = np.arange(rows[0], dates.size) if all_days else test
        every: dict[str, FloatArray] = {"persistence": past[origins], "ewma": ewma[origins]}
        percent = 100.0 * returns[start : d + 1]
        fitted = fit_garch(percent)
        if fitted is None:
            raise ValueError(f"as-of {day}: the GARCH(1,1) fit failed on {percent.size} returns")
        alpha, beta = fitted
        long_var = float(np.mean(percent**2))
        next_var = garch_variance(100.0 * returns[start:], alpha, beta, long_var)
        mean_var = garch_mean_variance(next_var[origins - start], alpha, beta, long_var, horizon)
        every["garch"] = TRADING_DAYS * mean_var / 1e4
        coef = fit_har(har_x[rows], target[rows])
        floor = float(target[rows].min())
        every["har"] = predict_har(coef, har_x[origins], floor)
        params: dict[str, Any] = {
            "garch": {"alpha": alpha, "beta": beta, "long_var": long_var},
            "har": {
                "coef": dict(zip(HAR_COEFFICIENTS, coef.tolist(), strict=True)),
                "floor": floor,
            },
        }
        if network is not None:
            every["cnn_lstm"], params["cnn_lstm"] = cnn_lstm_forecast(
                inputs, n_scaled, target, rows, origins, horizon, cnn_lstm, network, seed
            )
            params["cnn_lstm"]["settings"] = asdict(cnn_lstm)
        forecasts = {name: f[test - origins[0]] for name, f in every.items()}

        compared = compare_forecasts(
            target[test], forecasts, block=block, resamples=resamples, seed=seed
        )
        results.append(
            {
                "as_of": str(day),
                "last_train_day": str(dates[d]),
                "train": {
                    "first": str(dates[rows[0]]),
                    "last": str(dates[rows[-1]]),
                    "rows": int(rows.size),
                },
                "test": {
                    "first": str(dates[test[0]]),
                    "last": str(dates[test[-1]]),
                    "days": int(test.size),
                    "target_end": str(dates[test[-1] + horizon]),
                },
                "horizon": horizon,
                "params": params,
                **compared,
                "daily": {
                    "dates": [str(x) for x in dates[test]],
                    "realized": target[test].tolist(),
                    "forecasts": {name: f.tolist() for name, f in forecasts.items()},
                },
            }
        )
        if all_days:
            results[-1]["all_days"] = {"dates": dates[origins], "forecasts": every}
    return results


def pooled_comparison(
    results: Sequence[Mapping[str, Any]], *, block: int = 10, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """``compare_forecasts`` over the test days of every as-of, in date order: more days,
    narrower intervals. Blocks may straddle two windows' seam, a handful of days in hundreds.
    """
    ordered = sorted(results, key=lambda r: r["test"]["first"])
    realized = np.concatenate([r["daily"]["realized"] for r in ordered])
    names = list(ordered[0]["daily"]["forecasts"])
    forecasts = {
        name: np.concatenate([r["daily"]["forecasts"][name] for r in ordered]) for name in names
    }
    return compare_forecasts(realized, forecasts, block=block, resamples=resamples, seed=seed)


def _cell(row: Mapping[str, Any]) -> str:
    return f"{row['difference']:+.3g} [{row['low']:+.3g}, {row['high']:+.3g}] {row['verdict']}"


def markdown_report(
    results: Sequence[Mapping[str, Any]], pooled: Mapping[str, Any] | None = None
) -> str:
    """One markdown table: per as-of (and ``pooled``, if given) and forecaster, mean MSE and
    QLIKE, and the differences against the window's best baseline and against HAR with their
    95 % interval and verdict (negative: lower loss than the reference; "same" where the
    best baseline is HAR)."""
    blocks = [(r["as_of"], f"{r['test']['first']}…{r['test']['last']}", r) for r in results]
    if pooled is not None:
        blocks.append(("all", "pooled", pooled))
    rows = []
    for as_of, window, result in blocks:
        best = result["best_baseline"]
        found = {(d["forecaster"], d["baseline"], d["metric"]): d for d in result["differences"]}
        for name, loss in result["losses"].items():
            cells = []
            for against_har, reference in enumerate((best, "har")):
                for metric in ("qlike", "mse"):
                    diff = found.get((name, reference, metric))
                    if name == reference:
                        cells.append("reference")
                    elif against_har and best == "har":
                        cells.append("same")
                    else:
                        cells.append(_cell(diff) if diff else "")
            rows.append(
                [
                    as_of,
                    window,
                    f"**{name}**" if name == best else name,
                    f"{loss['mse']:.3g}",
                    f"{loss['qlike']:.4f}",
                    *cells,
                ]
            )
    header = [
        "as of",
        "test origins",
        "forecaster (**best baseline**)",
        "MSE",
        "QLIKE",
        "ΔQLIKE vs best",
        "ΔMSE vs best",
        "ΔQLIKE vs har",
        "ΔMSE vs har",
    ]
    return markdown_table(header, rows, right_from=3)
