"""``specialist_agents``: one hedging agent per weekly code, trained in a Pipes child.

The asset reads the code's book (its ``portfolio_selection`` rows) and those options'
``greeks_features`` rows (one short read-only connection), exports both as content-addressed
Parquet files and launches ``python -m hedge_pipeline.training specialist`` with the
``hedge-cnn-lstm`` version to use: by default the one the latest ``cnn_lstm_model``
materialization registered, so the specialist is built on exactly the upstream asset's current
model. The child validates the configuration, trains, evaluates and registers
``hedge-specialist-<weekly_code>``, and reports the materialization back.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from hedge_pipeline.orchestration.identity import identity
from hedge_pipeline.orchestration.partitions import weekly_code_partitions
from hedge_pipeline.orchestration.training_asset import TrainingRequest, training_asset
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.datasets import export_parquet
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.market_data.assets import greeks_features
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.selection.templates import load_template
from hedge_pipeline.stages.specialists.config import SpecialistChoices, SpecialistStageConfig
from hedge_pipeline.tables import warehouse

SELECTION_OF_CODE = "SELECT * FROM portfolio_selection WHERE weekly_code = $1"
FEATURES_OF_SELECTION = """
    SELECT f.* FROM greeks_features f
    JOIN portfolio_selection s USING (weekly_code, option_symbol)
    WHERE f.weekly_code = $1
"""


class SpecialistConfig(dg.Config, SpecialistChoices):
    """The hedging problem and the trainer; sizes come from the profile (``HEDGE_PROFILE``)."""

    cnn_lstm_version: int | None = Field(
        default=None, description="hedge-cnn-lstm version; default: cnn_lstm_model's latest"
    )


def _cnn_lstm_version(context: dg.AssetExecutionContext, config: SpecialistConfig) -> int:
    if config.cnn_lstm_version is not None:
        return config.cnn_lstm_version
    event = context.instance.get_latest_materialization_event(cnn_lstm_model.key)
    version = event and event.asset_materialization.metadata.get("version")
    if version is None:
        raise dg.Failure(
            "cnn_lstm_model has no materialization with a registered version: materialize it "
            "first, or set cnn_lstm_version in the run config",
            allow_retries=False,
        )
    return int(version.value)


def _inputs(request: TrainingRequest) -> dict:
    """The code's merged config, its exported book and feature rows, the CNN-LSTM version."""
    code = request.context.partition_key
    with request.warehouse_db.connect(read_only=True) as con:
        selection = warehouse.query(con, SELECTION_OF_CODE, [code])
        features = warehouse.query(con, FEATURES_OF_SELECTION, [code])
    book = selection.filter(~pl.col("is_hedge_instrument"))
    if book.is_empty():
        raise dg.Failure(
            f"portfolio_selection holds no option of weekly code {code!r}: its template did "
            "not select the code (see the portfolio_selection metadata) or it was never "
            "materialized after the code arrived",
            allow_retries=False,
        )
    params = load_template(selection["template"][0]).training_params
    stage_config = SpecialistStageConfig.within(request.config, request.profile, params)
    exported = {
        "features": export_parquet(features, paths.datasets_dir()),
        "selection": export_parquet(selection, paths.datasets_dir()),
    }
    version = _cnn_lstm_version(request.context, request.config)
    request.context.log.info(
        f"{code}: {book.height} book options, {selection.height - book.height} hedge option, "
        f"{features.height} feature rows; "
        f"hedge-cnn-lstm v{version}"
    )
    data_version = "-".join(path.stem[:16] for path in exported.values())
    return {
        **{key: str(path) for key, path in exported.items()},
        "cnn_lstm_version": version,
        "config": stage_config.as_dict(),
        "identity": identity(request.context, data_version=data_version, weekly_code=code),
    }


specialist_agents = training_asset(
    name="specialist_agents",
    stage="specialist",
    config_type=SpecialistConfig,
    inputs=_inputs,
    deps=[greeks_features, portfolio_selection, cnn_lstm_model],
    partitions_def=weekly_code_partitions,
    description="The weekly code's hedging agent: trained on episodes simulated from a market "
    "calibrated to the code, tested on its held-out windows (replay and simulated) against the "
    "strongest baseline; registered as ``hedge-specialist-<weekly_code>``.",
)
