"""``raw_option_chains`` and ``greeks_features``: one weekly code per partition, in DuckDB.

Both assets are thin: the source parses, ``validation`` judges, ``features`` computes, and
both write-audit-publish: ``tables.warehouse`` stages the partition, ``quality`` audits the
staged rows with the blocking checks, and only if every one passes is the partition published
(in one transaction). A failed check publishes nothing: its evaluation (passed=False, with
the worst offenders in its metadata) is recorded before the step fails, once and without a
retry, with a message naming file, row and column of those offenders. Dagster allows check
results ahead of (and without) a materialization for this pattern; they then point at no
materialization (dagster-io/dagster#16178, #16732). Both write behind pool ``duckdb_writer``
(limit 1), so writers queue in Dagster rather than on DuckDB's file lock.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import duckdb
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
from hedge_pipeline.stages.market_data.quality import FEATURE_CHECKS, RAW_CHECKS, CheckOutcome
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import RAW_COLUMNS, ChainDataError, UnknownWeeklyCodeError

PREVIEW_COLUMNS = ["ts", "option_symbol", "strike", "bid", "ask", "underlying_price"]
FEATURE_PREVIEW = ["ts", "option_symbol", "mid", "tau", "log_moneyness", "iv", "iv_status", "delta"]
# Which published table each staged one fills: the staged raw rows carry their lineage, which
# raw_lineage takes and raw_option_chains leaves.
RAW_PUBLISH = {
    "raw_option_chains": "raw_option_chains",
    "raw_lineage": "raw_option_chains",
    "quarantined_quotes": "quarantined_quotes",
}
FEATURE_PUBLISH = {"greeks_features": "greeks_features"}
# What the IV audit of staged features reads back: the quotes and their solve status, not the
# twenty computed columns (reading those back cost as much as computing them).
AUDITED_FEATURE_COLUMNS = [*RAW_COLUMNS, "iv_status"]


def _partition_writer(
    asset: str, checks: tuple[str, ...], deps: list[dg.AssetsDefinition] | None = None
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """The decorator of both assets: one weekly code per partition, written to DuckDB behind
    pool ``duckdb_writer``, its ``checks`` blocking, a failed run retried twice (bad input and
    a failed audit raise ``dg.Failure`` with retries off)."""
    return dg.asset(
        partitions_def=weekly_code_partitions,
        group_name="market_data",
        pool="duckdb_writer",
        kinds={"duckdb", "polars"},
        deps=deps,
        check_specs=[dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in checks],
        retry_policy=dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL),
    )


def _audited(
    asset: str, code: str, checks: tuple[str, ...], outcomes: dict[str, CheckOutcome]
) -> Iterator[dg.AssetCheckResult]:
    """Nothing when the staged partition passed (its check results go with the
    materialization); otherwise every check's result, then the run's failure."""
    message = quality.audit_failure(asset, code, outcomes)
    if message is None:
        return
    for name in checks:
        yield check_result(name, outcomes[name])
    raise dg.Failure(description=message, allow_retries=False)


@_partition_writer("raw_option_chains", RAW_CHECKS)
def raw_option_chains(
    context: dg.AssetExecutionContext,
    source: ChainSourceResource,
    warehouse_db: WarehouseResource,
    quality_policy: DataQualityResource,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Quotes of every option of one weekly code, in the canonical schema (docs/design.md §3)."""
    code = context.partition_key
    try:
        loaded = source.build().load(code)
        result = validate_chain(loaded, quality_policy.bad_rows)
    except (ChainDataError, UnknownWeeklyCodeError) as exc:
        # Bad input does not get better on retry: fail once, clearly, with nothing written.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    quarantined = result.quarantined.with_columns(pl.lit(code).alias("weekly_code"))
    incoming = {"raw_option_chains": result.valid, "quarantined_quotes": quarantined}
    with warehouse_db.connect() as con:
        with warehouse.staged_partition(con, code, incoming) as staged:
            stored = staged.read("raw_option_chains")
            outcomes = quality.audit_raw(
                stored,
                staged.types("raw_option_chains"),
                quality_policy.max_arbitrage_violation_rate,
            )
            if quality.all_passed(outcomes):
                staged.publish(code, RAW_PUBLISH)
        version = warehouse.partition_hash(con, "raw_option_chains", code)
    yield from _audited("raw_option_chains", code, RAW_CHECKS, outcomes)
    yield dg.MaterializeResult(
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


def _unsolved_lineage(
    con: duckdb.DuckDBPyConnection, staged: warehouse.StagedPartition, code: str
) -> pl.DataFrame:
    """The published ``raw_lineage`` of the staged rows whose IV did not solve: the only rows
    the IV audit can name (it locates offenders by file and row), not the whole partition."""
    return warehouse.query(
        con,
        f"""SELECT l.* FROM raw_lineage l
        SEMI JOIN {staged.name("greeks_features")} s
            ON s.weekly_code = l.weekly_code AND s.option_symbol = l.option_symbol
            AND s.ts = l.ts AND s.iv_status <> 'ok'
        WHERE l.weekly_code = $1""",
        [code],
    )


@_partition_writer("greeks_features", FEATURE_CHECKS, deps=[raw_option_chains])
def greeks_features(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    quality_policy: DataQualityResource,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Mid, implied vol, Greeks, moneyness, tau and market features of one weekly code."""
    code = context.partition_key
    # One connection for the whole step: the pool serializes writers anyway, and a second
    # open (with its checkpoint on close) cost more than the Greeks of a small code.
    with warehouse_db.connect() as con:
        raw = warehouse.read_partition(con, "raw_option_chains", code)
        if raw.is_empty():
            held = warehouse.query(con, "SELECT DISTINCT weekly_code FROM raw_option_chains")
            codes = ", ".join(sorted(held["weekly_code"])) or "nothing"
            raise dg.Failure(
                f"raw_option_chains holds no rows for weekly code {code!r} (materialize it "
                f"first, or check the code); it holds: {codes}",
                allow_retries=False,
            )
        features = compute_features(raw)
        with warehouse.staged_partition(con, code, {"greeks_features": features}) as staged:
            outcomes = quality.audit_features(
                staged.read("greeks_features", AUDITED_FEATURE_COLUMNS),
                staged.types("greeks_features"),
                features.schema,
                _unsolved_lineage(con, staged, code),
                quality_policy.iv_solve_rate_floor,
            )
            if quality.all_passed(outcomes):
                staged.publish(code, FEATURE_PUBLISH)
        version = warehouse.partition_hash(con, "greeks_features", code)
    yield from _audited("greeks_features", code, FEATURE_CHECKS, outcomes)
    rates = iv_status_rates(features)
    yield dg.MaterializeResult(
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
