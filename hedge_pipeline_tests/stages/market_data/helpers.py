"""Materializing the market-data assets in-process, as the tests of this folder do."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from hedge_pipeline.orchestration.resources import (
    ChainSourceResource,
    DataQualityResource,
    WarehouseResource,
)
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains


def resources(
    kind: str = "synthetic",
    raw_dir: Path | None = None,
    bad_rows: str = "reject",
    history: str | Path | None = None,
    history_symbol: str | None = None,
) -> dict[str, dg.ConfigurableResource]:
    source = ChainSourceResource(
        kind=kind,
        raw_dir=str(raw_dir) if raw_dir else None,
        history=str(history) if history else None,
        history_symbol=history_symbol,
        bad_rows=bad_rows,
    )
    return {
        "source": source,
        "warehouse_db": WarehouseResource(path=str(paths.warehouse_path())),
        "quality_policy": DataQualityResource(bad_rows=bad_rows),
    }


def materialize_code(
    instance: dg.DagsterInstance, code: str, *, raise_on_error: bool = True, **resource_args
) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition("weekly_code", code):
        instance.add_dynamic_partitions("weekly_code", [code])
    return dg.materialize(
        [raw_option_chains, greeks_features],
        partition_key=code,
        instance=instance,
        resources=resources(**resource_args),
        raise_on_error=raise_on_error,
    )
