"""A smoke-sized CNN-LSTM dataset built with the pure pipeline code (no Dagster, no DuckDB)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from hedge_pipeline.chains.features import compute_features
from hedge_pipeline.chains.synthetic import SyntheticSource
from hedge_pipeline.datasets import export_parquet
from hedge_pipeline.ml.market_state import market_state_frame
from hedge_pipeline.portfolio.selection import select_portfolio
from hedge_pipeline.portfolio.templates import load_template
from hedge_pipeline.profiles import cnn_lstm_stage_config, get_profile

CODES = ("3CN5", "3IN5")


@pytest.fixture(scope="session")
def smoke_market_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = SyntheticSource(codes=CODES)
    features = pl.concat(
        compute_features(source.load(c).drop("source_file", "source_row")) for c in CODES
    )
    template = load_template("atm_book")
    selection = select_portfolio(features, template).frame.filter(~pl.col("is_hedge_instrument"))
    frame = market_state_frame(features, selection, horizon=template.training_params.horizon)
    return export_parquet(frame, tmp_path_factory.mktemp("datasets"))


def smoke_config(**overrides) -> dict:
    params = load_template("atm_book").training_params
    config = cnn_lstm_stage_config(
        get_profile("smoke"),
        sequence_length=params.sequence_length,
        horizon=params.horizon,
        batch_size=params.batch_size,
        learning_rate=params.learning_rate,
        epochs=params.epochs,
        hpo_trials=0,
    )
    return {**config, **overrides}


def write_extras(directory: Path, dataset: Path, **config_overrides) -> Path:
    """Extras for a standalone run of the stage (what the asset would pass through Pipes)."""
    extras = {
        "dataset": str(dataset),
        "config": smoke_config(**config_overrides),
        "identity": {
            "dagster_run_id": "standalone-test",
            "dagster_asset": "cnn_lstm_model",
            "data_version": dataset.stem,
            "code_version": "test",
            "upstream": {},
        },
        "failure_file": str(directory / "failure.json"),
    }
    path = directory / "extras.json"
    path.write_text(json.dumps(extras), encoding="utf-8")
    return path
