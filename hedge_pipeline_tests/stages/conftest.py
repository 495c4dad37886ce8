"""A smoke-sized CNN-LSTM dataset built with the pure pipeline code (no Dagster, no DuckDB)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from hedge_pipeline.runtime.datasets import export_parquet
from hedge_pipeline.runtime.profiles import get_profile
from hedge_pipeline.stages.cnn_lstm.config import CnnLstmChoices, CnnLstmStageConfig
from hedge_pipeline.stages.cnn_lstm.market_state import market_state_frame
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.stages.selection.book import select_portfolio
from hedge_pipeline.stages.selection.templates import load_template
from hedge_pipeline.stages.specialists.config import SpecialistChoices, SpecialistStageConfig

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
    config = CnnLstmStageConfig.within(
        CnnLstmChoices(hpo_trials=0), params, get_profile("smoke")
    ).as_dict()
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


@pytest.fixture(scope="session")
def smoke_specialist_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The code 3CN5's selection rows and their greeks_features rows, as the asset exports them."""
    code = CODES[0]
    source = SyntheticSource(codes=(code,))
    features = compute_features(source.load(code).drop("source_file", "source_row"))
    book = select_portfolio(features, load_template("atm_book")).frame
    rows = features.filter(pl.col("option_symbol").is_in(book["option_symbol"].implode()))
    folder = tmp_path_factory.mktemp("specialist")
    return {
        "features": export_parquet(rows, folder),
        "selection": export_parquet(book, folder),
    }


def write_specialist_extras(
    directory: Path, inputs: dict[str, Path], cnn_lstm_version: int = 1, **config_overrides
) -> Path:
    """Extras for a standalone run of the ``specialist`` stage on 3CN5 (smoke profile)."""
    config = SpecialistStageConfig.within(
        SpecialistChoices(
            algorithm="deep_hedging",
            criterion="es:0.1",
            cost=5e-4,
            slippage=0.0,
            fixed_fee=0.0,
            head="mlp",
            hedge_option=True,
            learning_rate=3e-3,
            objective="per_state",
        ),
        get_profile("smoke"),
    ).as_dict()
    extras = {
        **{key: str(path) for key, path in inputs.items()},
        "cnn_lstm_version": cnn_lstm_version,
        "config": {**config, **config_overrides},
        "identity": {
            "dagster_run_id": "standalone-test",
            "dagster_asset": "specialist_agents",
            "data_version": "test",
            "code_version": "test",
            "weekly_code": CODES[0],
            "upstream": {},
        },
        "failure_file": str(directory / "failure.json"),
    }
    path = directory / "extras.json"
    path.write_text(json.dumps(extras), encoding="utf-8")
    return path
