"""Materializing the market-data assets in-process, as the tests of this folder do."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from hedge_pipeline.orchestration.resources import (
    ChainSourceResource,
    DataQualityResource,
    WarehouseResource,
)
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains
from hedge_pipeline_tests.conftest import small_book


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


def below_intrinsic_book(synthetic_code_frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A small book (row index ``i``) plus two deep in-the-money options bid at 0 over its 40
    bars: each such mid falls below its intrinsic value while the ask stays above it, so the
    raw quotes pass their audit and are published, and no implied vol solves for a quarter of
    the book (greeks_features' ``iv_solve_rate`` fails). Returns the book and those rows."""
    bars = synthetic_code_frame["ts"].unique().sort().head(40)
    deep = synthetic_code_frame.filter(
        pl.col("option_symbol").is_in(["3CN5_C107", "3CN5_P113"])
        & pl.col("ts").is_in(bars.implode())
    )
    book = pl.concat([small_book(synthetic_code_frame), deep]).with_row_index("i")
    unsolved = book.filter(pl.col("option_symbol").is_in(deep["option_symbol"].unique().implode()))
    zeroed = pl.col("i").is_in(unsolved["i"].implode())
    return book.with_columns(bid=pl.when(zeroed).then(0.0).otherwise("bid")), unsolved


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
