"""A registered CNN-LSTM through MLflow's own API: ``load_model("models:/…").predict(states)``
holds the stage's own forecasts and MC-dropout stds on the same bars."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest

from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm import serving
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME, load_model
from hedge_pipeline.stages.cnn_lstm.market_state import (
    FEATURE_COLUMNS,
    TARGET_COLUMNS,
    SequenceData,
)
from hedge_pipeline.stages.cnn_lstm.model import split_outputs
from hedge_pipeline_tests.registry.served import cnn_lstm_folder, register_served

LENGTH, BARS = 8, 40


def market_state(seed: int = 0) -> pl.DataFrame:
    """One code's bars, every input moving, all in the training split (so that the stage's
    own windows are every full window)."""
    rng = np.random.default_rng(seed)
    start = datetime(2025, 6, 2, 14, 30)
    return pl.DataFrame(
        {
            "weekly_code": ["3CN5"] * BARS,
            "ts": [start + timedelta(minutes=5 * i) for i in range(BARS)],
            **{c: rng.normal(0.1 * i, 1.0 + i, BARS) for i, c in enumerate(FEATURE_COLUMNS)},
            **{c: rng.normal(0.0, 0.1, BARS) for c in TARGET_COLUMNS},
            "baseline_rv": rng.uniform(0.1, 0.3, BARS),
            "split": ["train"] * BARS,
        }
    )


def test_the_served_forecasts_are_the_stages_own(
    mlflow_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = cnn_lstm_folder(tmp_path / "stage" / "model", LENGTH)
    register_served(mlflow_client, MODEL_NAME, folder, tmp_path, alias=registry.CHAMPION)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri())
    served = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")

    frame = market_state()
    predicted = served.predict(frame.to_pandas(), params={"mc_samples": 5, "seed": 3})

    model, spec = load_model(folder)
    data = SequenceData.build(
        frame, LENGTH, inputs=spec.inputs.standardizer(), targets=spec.targets.standardizer()
    )
    own = split_outputs(model, data, "train", mc_samples=5, seed=3)
    forecast = predicted[list(TARGET_COLUMNS)].to_numpy()
    std = predicted[[f"{c}_std" for c in TARGET_COLUMNS]].to_numpy()
    assert np.isnan(forecast[: LENGTH - 1]).all() and np.isnan(std[: LENGTH - 1]).all()
    np.testing.assert_array_equal(forecast[LENGTH - 1 :], own.prediction)
    np.testing.assert_array_equal(std[LENGTH - 1 :], own.std)
    assert served.metadata.signature.inputs.input_names() == list(FEATURE_COLUMNS)


def test_states_without_a_feature_are_refused_by_name(tmp_path: Path) -> None:
    served = serving.load(cnn_lstm_folder(tmp_path / "model", LENGTH))
    states = served.example().drop(columns=["atm_iv"])
    with pytest.raises(ValueError, match=r"hedge-cnn-lstm: states lack the columns \['atm_iv'\]"):
        served.predict(states, serving.DEFAULT_PARAMS)
