"""regression_metrics: textbook values, identities, and NaN (never an exception) when degenerate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hedge_pipeline.harness.metrics import METRIC_NAMES, regression_metrics

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


def test_values_by_hand() -> None:
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0])
    # errors 1, 0, 0, 1: mse 0.5, mae 0.5; var(truth) = 1.25; var(error) = 0.25
    assert m["mse"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["r2"] == pytest.approx(1 - 0.5 / 1.25)
    assert m["explained_variance"] == pytest.approx(1 - 0.25 / 1.25)
    assert m["correlation"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [2, 2, 3, 5])[0, 1])
    assert set(m) == set(METRIC_NAMES)


def test_bias_costs_r2_but_not_explained_variance_or_correlation() -> None:
    truth = np.array([0.1, 0.3, 0.2, 0.5])
    m = regression_metrics(truth, truth + 0.1)
    assert m["mse"] == pytest.approx(0.01)
    assert m["r2"] < 1.0
    assert m["explained_variance"] == pytest.approx(1.0)
    assert m["correlation"] == pytest.approx(1.0)


def test_constant_truth_gives_nan_where_undefined() -> None:
    m = regression_metrics([0.2, 0.2, 0.2], [0.1, 0.2, 0.3])
    assert m["mse"] == pytest.approx(0.02 / 3)
    assert math.isnan(m["r2"]) and math.isnan(m["explained_variance"])
    assert math.isnan(m["correlation"])


def test_constant_forecast_has_no_correlation() -> None:
    """A zero-change baseline is constant: its correlation is NaN, its errors are not."""
    m = regression_metrics([0.1, -0.2, 0.3], [0.0, 0.0, 0.0])
    assert math.isnan(m["correlation"])
    assert m["r2"] <= 0.0 and np.isfinite(m["mse"])


def test_empty_input_is_all_nan() -> None:
    assert all(math.isnan(v) for v in regression_metrics([], []).values())


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="3 values"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0])


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, st.integers(2, 30), elements=finite), st.data())
def test_identities(truth: np.ndarray, data: st.DataObject) -> None:
    pred = data.draw(arrays(np.float64, truth.shape, elements=finite))
    m = regression_metrics(truth, pred)
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    assert m["mae"] <= m["rmse"] + 1e-9
    if np.var(truth) > 1e-6:
        assert m["r2"] <= m["explained_variance"] + 1e-9  # a bias only lowers R²
        assert regression_metrics(truth, truth)["r2"] == pytest.approx(1.0)
    if not math.isnan(m["correlation"]):
        assert -1 - 1e-9 <= m["correlation"] <= 1 + 1e-9
