"""Regression metrics for forecasts (NumPy only), the same keys for a model and its baselines.

Degenerate inputs give NaN instead of raising: R² and explained variance are undefined when the
truth is constant (no variance to explain), the correlation when either side is constant (a
persistence or zero-change baseline can be), and every metric of an empty sample. A report then
shows "nan" where a number would mislead, and a training run is never lost to a metric.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

METRIC_NAMES = ("mse", "mae", "rmse", "r2", "explained_variance", "correlation")


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """MSE, MAE, RMSE, R², explained variance and Pearson correlation of a forecast.

    Both are flattened to float64 and must have the same number of values. R² is
    ``1 - SSE / SST`` (negative when the forecast is worse than the truth's mean); explained
    variance is ``1 - Var(error) / Var(truth)``, which ignores a constant bias. NaN for the
    degenerate cases of the module docstring.

    Examples:
        >>> m = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
        >>> round(m["mse"], 4), round(m["r2"], 2)
        (0.3333, 0.5)
        >>> math.isnan(regression_metrics([1.0, 1.0], [1.0, 2.0])["r2"])
        True
    """
    true = np.asarray(y_true, dtype=np.float64).ravel()
    pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} values but y_pred has {pred.size}")
    if true.size == 0:
        return dict.fromkeys(METRIC_NAMES, math.nan)
    error = pred - true
    mse = float(np.mean(error**2))
    true_var = float(np.var(true))
    # Equal values are constant even where their computed variance is rounding noise.
    true_varies = np.ptp(true) > 0 and true_var > 0
    both_vary = true_varies and np.ptp(pred) > 0 and np.var(pred) > 0
    return {
        "mse": mse,
        "mae": float(np.mean(np.abs(error))),
        "rmse": math.sqrt(mse),
        "r2": 1.0 - mse / true_var if true_varies else math.nan,
        "explained_variance": 1.0 - float(np.var(error)) / true_var if true_varies else math.nan,
        "correlation": float(np.corrcoef(true, pred)[0, 1]) if both_vary else math.nan,
    }
