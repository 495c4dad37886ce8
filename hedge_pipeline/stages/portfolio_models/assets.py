"""The portfolio-level assets: ``meta_controller`` → ``joint_model`` → ``hedge_ensemble``.

Each reads the selection and the book rows of every selected code (one short read-only
connection), exports them as content-addressed Parquet files and launches its training stage
(``meta_controller``, ``joint``, ``ensemble``) through Pipes with the registered versions of
what it builds on, read off the upstream assets' latest materializations: the specialist of
every selected code, the meta-controller, the joint models. The children train, evaluate and
register; the ensemble's child also decides the promotion (docs/design.md §8).
"""

from collections.abc import Callable
from typing import Any

import dagster as dg

from hedge_pipeline.orchestration.identity import identity
from hedge_pipeline.orchestration.training_asset import TrainingRequest, training_asset
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.datasets import export_parquet
from hedge_pipeline.stages.portfolio_models.config import (
    PortfolioModelChoices,
    PortfolioModelStageConfig,
)
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.specialists.asset import specialist_agents
from hedge_pipeline.tables import warehouse

SELECTION = "SELECT * FROM portfolio_selection"
FEATURES_OF_SELECTION = """
    SELECT f.* FROM greeks_features f
    JOIN portfolio_selection s USING (weekly_code, option_symbol)
"""


class PortfolioModelsConfig(dg.Config, PortfolioModelChoices):
    """The portfolio's objective, limits and training; sizes come from the profile."""


def _inputs(request: TrainingRequest) -> dict:
    """The merged stage config (checked before anything is exported), the exported selection
    and features, and the specialists' versions per selected code."""
    context = request.context
    stage_config = PortfolioModelStageConfig.within(request.config, request.profile)
    with request.warehouse_db.connect(read_only=True) as con:
        selection = warehouse.query(con, SELECTION, [])
        features = warehouse.query(con, FEATURES_OF_SELECTION, [])
    codes = sorted(set(selection.filter(~selection["is_hedge_instrument"])["weekly_code"]))
    versions, missing = {}, []
    for code in codes:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=specialist_agents.key, asset_partitions=[code]),
            limit=1,
        ).records
        version = records and records[0].asset_materialization.metadata.get("version")
        if version:
            versions[code] = int(version.value)
        else:
            missing.append(code)
    if missing:
        raise dg.Failure(
            f"no specialist registered for selected codes {missing}: materialize their "
            "specialist_agents partitions first",
            allow_retries=False,
        )
    exported = {
        "features": export_parquet(features, paths.datasets_dir()),
        "selection": export_parquet(selection, paths.datasets_dir()),
    }
    return {key: str(path) for key, path in exported.items()} | {
        "specialists": versions,
        "config": stage_config.as_dict(),
    }


def _latest(context: dg.AssetExecutionContext, asset: dg.AssetsDefinition, key: str):
    event = context.instance.get_latest_materialization_event(asset.key)
    value = event and event.asset_materialization.metadata.get(key)
    if value is None:
        raise dg.Failure(
            f"{asset.key.to_user_string()} has no materialization with a registered {key}: "
            "materialize it first",
            allow_retries=False,
        )
    return value.value


#: What an asset adds to its extras from its upstream assets; returns the data-version tag.
Upstream = Callable[[dg.AssetExecutionContext, dict], str]


def _portfolio_asset(upstream: Upstream, **asset: Any) -> dg.AssetsDefinition:
    """One portfolio asset (``asset``: :func:`training_asset`'s name, stage, deps and
    description): read and export its inputs (:func:`_inputs`), add what
    ``upstream(context, extras)`` says it builds on (it returns the short tag that enters the
    data version), launch the stage's child."""

    def inputs(request: TrainingRequest) -> dict:
        extras = _inputs(request)
        data_version = "-".join(
            [path.rsplit("/", 1)[-1][:16] for path in (extras["features"], extras["selection"])]
            + [upstream(request.context, extras)]
        )
        return extras | {"identity": identity(request.context, data_version=data_version)}

    return training_asset(config_type=PortfolioModelsConfig, inputs=inputs, **asset)


def _specialists(context: dg.AssetExecutionContext, extras: dict) -> str:
    return "s" + ".".join(map(str, extras["specialists"].values()))


meta_controller = _portfolio_asset(
    _specialists,
    name="meta_controller",
    stage="meta_controller",
    deps=[specialist_agents, portfolio_selection],
    description="Portfolio-level policy over the frozen specialists of every selected code of one "
    "underlying: per-specialist scales and weights against BS delta, and a portfolio no-trade "
    "band, trading one netted position; registered as ``hedge-meta-controller``.",
)


def _meta_controller(context: dg.AssetExecutionContext, extras: dict) -> str:
    meta = int(_latest(context, meta_controller, "version"))
    extras["meta_controller_version"] = meta
    return f"m{meta}"


joint_model = _portfolio_asset(
    _meta_controller,
    name="joint_model",
    stage="joint",
    deps=[meta_controller],
    description="The meta-controller and its specialists fine-tuned together through a "
    "curriculum, one model per seed (the profile's ensemble size); registered as versions of "
    "``hedge-joint``.",
)


def _joint_models(context: dg.AssetExecutionContext, extras: dict) -> str:
    joint_versions = [int(v) for v in _latest(context, joint_model, "versions")]
    event = context.instance.get_latest_materialization_event(joint_model.key)
    meta = int(event.asset_materialization.metadata["upstream_meta_controller_version"].value)
    extras |= {"joint_versions": joint_versions, "meta_controller_version": meta}
    return "j" + ".".join(map(str, joint_versions))


hedge_ensemble = _portfolio_asset(
    _joint_models,
    name="hedge_ensemble",
    stage="ensemble",
    deps=[joint_model],
    description="The joint models weighted by validation risk with a turbulence guard, "
    "evaluated on the held-out test windows against every baseline and stage, registered as "
    "``hedge-ensemble`` and promoted to ``champion`` only through the gate.",
)
