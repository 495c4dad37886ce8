"""``cnn_lstm_model``: the market-state model, trained in a Pipes child, registered in MLflow.

The asset reads the selected options' features (one short read-only connection), builds the
per-(weekly code, bar) market-state frame, exports it as a content-addressed Parquet file and
launches ``python -m hedge_pipeline.training cnn_lstm``. The child does the rest and reports
the materialization (version, metrics, curves) back through Pipes.
"""

import dagster as dg
import polars as pl

from hedge_pipeline.orchestration.identity import identity
from hedge_pipeline.orchestration.resources import WarehouseResource
from hedge_pipeline.orchestration.training_asset import TrainingRequest, training_asset
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.datasets import export_parquet
from hedge_pipeline.stages.cnn_lstm.config import CnnLstmChoices, CnnLstmStageConfig
from hedge_pipeline.stages.market_data.assets import greeks_features
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.selection.templates import load_template
from hedge_pipeline.tables import warehouse

SELECTED_OPTIONS = "SELECT * FROM portfolio_selection WHERE NOT is_hedge_instrument"
FEATURES_OF_SELECTION = """
    SELECT f.* FROM greeks_features f
    JOIN portfolio_selection s USING (weekly_code, option_symbol)
    WHERE NOT s.is_hedge_instrument
"""


class CnnLstmModelConfig(dg.Config, CnnLstmChoices):
    """Run-time overrides; unset fields come from the template within the profile's budget."""


def _read_inputs(warehouse_db: WarehouseResource) -> tuple[pl.DataFrame, pl.DataFrame]:
    with warehouse_db.connect(read_only=True) as con:
        selection = warehouse.query(con, SELECTED_OPTIONS)
        features = warehouse.query(con, FEATURES_OF_SELECTION)
    if selection.is_empty():
        raise dg.Failure("portfolio_selection is empty: materialize it first", allow_retries=False)
    return selection, features


def _inputs(request: TrainingRequest) -> dict:
    """The merged config (within the template and the profile) and the exported
    market-state frame of the selected options."""
    selection, features = _read_inputs(request.warehouse_db)
    template = load_template(selection["template"][0])
    params = template.training_params
    stage_config = CnnLstmStageConfig.within(request.config, params, request.profile)
    # Imported here: the module pulls in torch, which the code location should not load.
    from hedge_pipeline.stages.cnn_lstm.market_state import market_state_frame

    frame = market_state_frame(features, selection, horizon=params.horizon)
    dataset = export_parquet(frame, paths.datasets_dir())
    codes = selection["weekly_code"].n_unique()
    request.context.log.info(f"dataset {dataset.name}: {frame.height} bars of {codes} codes")
    return {
        "dataset": str(dataset),
        "config": stage_config.as_dict(),
        "identity": identity(request.context, data_version=dataset.stem),
    }


cnn_lstm_model = training_asset(
    name="cnn_lstm_model",
    stage="cnn_lstm",
    config_type=CnnLstmModelConfig,
    inputs=_inputs,
    deps=[portfolio_selection, greeks_features],
    description="CNN-LSTM market-state model: forecasts the underlying's realized vol (and the "
    "next ATM IV change) from sequences of market features; registered as ``hedge-cnn-lstm``.",
)
