"""What the automation tests report to an instance, and one tick of the retrain sensor."""

from __future__ import annotations

import dagster as dg

from hedge_pipeline.stages.automation.sensors import portfolio_retrain_sensor


def report_specialists(instance: dg.DagsterInstance, *codes: str) -> None:
    """A specialist materialization of each of ``codes``, as a finished run would record it."""
    for code in codes:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="specialist_agents", partition=code)
        )


def report_ensemble(instance: dg.DagsterInstance) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="hedge_ensemble"))


def portfolio_tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    return portfolio_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))
