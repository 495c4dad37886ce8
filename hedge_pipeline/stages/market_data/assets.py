"""``raw_option_chains`` and ``greeks_features``: one weekly code per partition, in DuckDB.

Both assets are thin: the source parses, ``validation`` judges, ``features``
computes, ``tables.warehouse`` replaces the partition in one transaction. Each step's checks
run on what was stored and come back with the materialization; the failed blocking ones stop
downstream assets. Both write behind pool ``duckdb_writer`` (limit 1), so writers queue in
Dagster rather than on DuckDB's file lock.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
import polars as pl

from hedge_pipeline.orchestration.metadata import check_result, preview_md, time_range
from hedge_pipeline.orchestration.partitions import weekly_code_partitions
from hedge_pipeline.orchestration.resources import (
    ChainSourceResource,
    DataQualityResource,
    WarehouseResource,
)
from hedge_pipeline.stages.market_data import quality
from hedge_pipeline.stages.market_data.features import compute_features, iv_status_rates
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import RAW_SCHEMA, ChainDataError, UnknownWeeklyCodeError

RAW_CHECKS = (
    "schema_and_types",
    "unique_keys",
    "bid_le_ask",
    "non_negative_prices",
    "within_contract_life",
    "static_no_arbitrage",
)
FEATURE_CHECKS = ("schema_and_types", "iv_solve_rate")
PREVIEW_COLUMNS = ["ts", "option_symbol", "strike", "bid", "ask", "underlying_price"]
FEATURE_PREVIEW = ["ts", "option_symbol", "mid", "tau", "log_moneyness", "iv", "iv_status", "delta"]
DUCKDB_TYPES = {
    pl.String(): "VARCHAR",
    pl.Float64(): "DOUBLE",
    pl.Int64(): "BIGINT",
    pl.Datetime("us", "UTC"): "TIMESTAMP",
}


def _partition_writer(
    asset: str, checks: tuple[str, ...], deps: list[dg.AssetsDefinition] | None = None
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """The decorator of both assets: one weekly code per partition, written to DuckDB behind
    pool ``duckdb_writer``, its ``checks`` blocking, a failed run retried twice (bad input
    raises ``dg.Failure`` with retries off)."""
    return dg.asset(
        partitions_def=weekly_code_partitions,
        group_name="market_data",
        pool="duckdb_writer",
        kinds={"duckdb", "polars"},
        deps=deps,
        check_specs=[dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in checks],
        retry_policy=dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL),
    )


def _table_types(con, table: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {table}").fetchall()}


@_partition_writer("raw_option_chains", RAW_CHECKS)
def raw_option_chains(
    context: dg.AssetExecutionContext,
    source: ChainSourceResource,
    warehouse_db: WarehouseResource,
    quality_policy: DataQualityResource,
) -> dg.MaterializeResult:
    """Quotes of every option of one weekly code, in the canonical schema (docs/design.md §3)."""
    code = context.partition_key
    try:
        loaded = source.build().load(code)
        result = validate_chain(loaded, quality_policy.bad_rows)
    except (ChainDataError, UnknownWeeklyCodeError) as exc:
        # Bad input does not get better on retry: fail once, clearly, with nothing written.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    quarantined = result.quarantined.with_columns(pl.lit(code).alias("weekly_code"))
    with warehouse_db.connect() as con:
        warehouse.replace_partition(
            con, code, {"raw_option_chains": result.valid, "quarantined_quotes": quarantined}
        )
        stored = warehouse.read_partition(con, "raw_option_chains", code)
        types = _table_types(con, "raw_option_chains")
        version = warehouse.partition_hash(con, "raw_option_chains", code)
    expected = {c: DUCKDB_TYPES[t] for c, t in RAW_SCHEMA.items()}
    outcomes = {
        "schema_and_types": quality.schema_matches(types, expected),
        "unique_keys": quality.unique_keys(stored),
        "bid_le_ask": quality.bid_le_ask(stored),
        "non_negative_prices": quality.non_negative_prices(stored),
        "within_contract_life": quality.within_contract_life(stored),
        "static_no_arbitrage": quality.static_no_arbitrage(
            stored, quality_policy.max_arbitrage_violation_rate
        ),
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": stored.height,
            "options": stored["option_symbol"].n_unique(),
            "source": f"{source.kind}",
            "source_files": sorted(set(loaded["source_file"].to_list()))[:20],
            "bad_row_policy": quality_policy.bad_rows,
            "quarantined_rows": result.quarantined.height,
            "quarantined_by_column": dg.MetadataValue.json(result.reason_counts()),
            **time_range(stored),
            "preview": preview_md(stored, columns=PREVIEW_COLUMNS),
        },
        data_version=dg.DataVersion(version),
        check_results=[check_result(name, outcomes[name]) for name in RAW_CHECKS],
    )


@_partition_writer("greeks_features", FEATURE_CHECKS, deps=[raw_option_chains])
def greeks_features(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    quality_policy: DataQualityResource,
) -> dg.MaterializeResult:
    """Mid, implied vol, Greeks, moneyness, tau and market features of one weekly code."""
    code = context.partition_key
    with warehouse_db.connect(read_only=True) as con:
        raw = warehouse.read_partition(con, "raw_option_chains", code)
    if raw.is_empty():
        with warehouse_db.connect(read_only=True) as con:
            held = warehouse.query(con, "SELECT DISTINCT weekly_code FROM raw_option_chains")
        codes = ", ".join(sorted(held["weekly_code"])) or "nothing"
        raise dg.Failure(
            f"raw_option_chains holds no rows for weekly code {code!r} (materialize it first, "
            f"or check the code); it holds: {codes}",
            allow_retries=False,
        )
    features = compute_features(raw)
    with warehouse_db.connect() as con:
        warehouse.replace_partition(con, code, {"greeks_features": features})
        types = _table_types(con, "greeks_features")
        version = warehouse.partition_hash(con, "greeks_features", code)
    rates = iv_status_rates(features)
    expected = {c: DUCKDB_TYPES[t] for c, t in features.schema.items()}
    outcomes = {
        "schema_and_types": quality.schema_matches(types, expected),
        "iv_solve_rate": quality.iv_solve_rate(features, quality_policy.iv_solve_rate_floor),
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": features.height,
            "options": features["option_symbol"].n_unique(),
            **time_range(features),
            "iv_status_rates": dg.MetadataValue.json(rates),
            "iv_failure_rate": 1.0 - rates["ok"],
            "median_atm_iv": float(features["atm_iv"].median() or float("nan")),
            "preview": preview_md(features, columns=FEATURE_PREVIEW),
        },
        data_version=dg.DataVersion(version),
        check_results=[check_result(name, outcomes[name]) for name in FEATURE_CHECKS],
    )
