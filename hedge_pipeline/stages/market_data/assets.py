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

A run may carry a range of codes (``BackfillPolicy.multi_run``: backfills and ``hedge run``
put up to ``CODES_PER_RUN`` in one). The raw step parses and validates each code of the range
on its own (a source reads one code's files), then stages, audits and publishes the range at
once; the features step computes, stages and publishes the range at once. Both audit each
code on its own rows, and a refused code does not hold back the others. If any was refused,
the published ones are recorded as materialized one by one before the step fails (Dagster's
asset backfill then counts them done and retries only the rest,
``_get_failed_asset_graph_subset`` in ``dagster/_core/execution/asset_backfill.py``), so the
tables and the instance agree.
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb
import polars as pl

from hedge_pipeline.orchestration.metadata import check_result, preview_md, previews_md
from hedge_pipeline.orchestration.partitions import weekly_code_partitions
from hedge_pipeline.orchestration.resources import (
    ChainSourceResource,
    DataQualityResource,
    WarehouseResource,
)
from hedge_pipeline.quant.implied_vol import STATUSES
from hedge_pipeline.runtime.settings import Settings
from hedge_pipeline.stages.market_data import quality
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.quality import FEATURE_CHECKS, RAW_CHECKS, CheckOutcome
from hedge_pipeline.stages.market_data.sources.base import ChainSource
from hedge_pipeline.stages.market_data.validation import ValidationResult, validate_chain
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import RAW_COLUMNS, ChainDataError, UnknownWeeklyCodeError

# Weekly codes per run of a backfill (and of ``hedge run``), ``HEDGE_CODES_PER_RUN`` (read when
# the definitions load): a run's start-up (a run worker loading the definitions, ~3 s of CPU)
# costs more than a history code's whole write (~0.3 s), so a thousand codes one per run spend
# most of their time starting runs (benchmarks/pipeline.md, "A thousand partitions"). Each code
# is still audited on its own; a smaller range holds less in memory.
CODES_PER_RUN = Settings.from_env().codes_per_run
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
    """The decorator of both assets: one weekly code per partition, up to
    ``CODES_PER_RUN`` of them per run of a backfill, written to DuckDB behind pool
    ``duckdb_writer``, its ``checks`` blocking, a failed run retried twice (bad input and a
    failed audit raise ``dg.Failure`` with retries off)."""
    with warnings.catch_warnings():
        # "Parameter `backfill_policy` of function `asset` is currently in beta": said on every
        # load of the code location, to every command's stderr; the policy is what we want.
        warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy")
        decorator = dg.asset(
            partitions_def=weekly_code_partitions,
            group_name="market_data",
            pool="duckdb_writer",
            kinds={"duckdb", "polars"},
            deps=deps,
            check_specs=[dg.AssetCheckSpec(name, asset=asset, blocking=True) for name in checks],
            retry_policy=dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL),
            backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=CODES_PER_RUN),
        )
    return decorator


def _codes(context: dg.AssetExecutionContext) -> list[str]:
    """The run's weekly codes: its partition, or every code of its range. (A single code's
    run asks for nothing more: ``partition_keys`` lists the range through the instance, which
    a directly invoked body, as ``bench.pipeline_steps`` times it, does not have.)"""
    return [context.partition_key] if context.has_partition_key else list(context.partition_keys)


@dataclass(frozen=True)
class Written:
    """What a run did with one weekly code of its range."""

    metadata: dict[str, Any]  # the code's materialization metadata (empty if refused)
    outcomes: dict[str, CheckOutcome] | None  # the audit; None if refused before it
    failure: str | None = None  # why the code was not published; None if it was


def _results(
    context: dg.AssetExecutionContext, checks: tuple[str, ...], written: dict[str, Written]
) -> Iterator[dg.AssetCheckResult | dg.AssetMaterialization | dg.MaterializeResult]:
    """The run's events for the codes it wrote.

    All published: one materialization per code, each with its own metadata (a single code's
    run also carries its content hash as data version; a ranged run's codes share one data
    version, as Dagster records a ranged output), and each check's result over the codes.
    Otherwise the published codes are materialized one by one (so an asset backfill counts
    them done and retries only the rest), the audited checks' results are recorded, and the
    step fails, once, naming every refused code with file, row and column of its offenders.
    """
    audited = {code: w.outcomes for code, w in written.items() if w.outcomes is not None}
    results = [check_result(name, _over(audited, name)) for name in checks] if audited else []
    refused = {code: w.failure for code, w in written.items() if w.failure is not None}
    if not refused:
        if len(written) == 1:
            [only] = written.values()
            version = dg.DataVersion(only.metadata["content_hash"])
            yield dg.MaterializeResult(
                metadata=only.metadata, data_version=version, check_results=results
            )
            return
        for code, w in written.items():
            context.add_asset_metadata(w.metadata, partition_key=code)
        yield dg.MaterializeResult(check_results=results)
        return
    for code, w in written.items():
        if w.failure is None:
            yield dg.AssetMaterialization(context.asset_key, partition=code, metadata=w.metadata)
    yield from results
    message = "\n".join(refused.values())
    if len(written) > 1:
        message = (
            f"{len(refused)} of {len(written)} weekly codes of this run not published "
            f"({', '.join(refused)}); the other {len(written) - len(refused)} were\n{message}"
        )
    raise dg.Failure(description=message, allow_retries=False)


def _over(audited: dict[str, dict[str, CheckOutcome]], check: str) -> CheckOutcome:
    """One check's outcome for the run: the code's own if it audited one code, else
    combined over its codes."""
    if len(audited) == 1:
        [outcomes] = audited.values()
        return outcomes[check]
    return quality.combined({code: outcomes[check] for code, outcomes in audited.items()})


def _write_raw(
    con: duckdb.DuckDBPyConnection,
    chain_source: ChainSource,
    codes: Sequence[str],
    policy: DataQualityResource,
    source_kind: str,
) -> dict[str, Written]:
    """Load and validate each code of a range (a source parses one code's files), then stage,
    audit and publish the range at once: one staging, each code audited on its own rows in
    one pass, one transaction for the codes that pass, their metadata and hashes in one pass.
    Per-code statements, not parsing, decided the rate of a history's 364-row codes
    (benchmarks/pipeline.md). A code refused (bad input or a failed check) leaves its
    published rows as they were and holds back none of the others."""
    written: dict[str, Written] = {}
    parsed: dict[str, tuple[list[str], ValidationResult]] = {}
    for code in codes:
        try:
            loaded = chain_source.load(code)
            result = validate_chain(loaded, policy.bad_rows)
        except (ChainDataError, UnknownWeeklyCodeError) as exc:
            # Bad input does not get better on retry: refused, clearly, with nothing written.
            written[code] = Written({}, None, str(exc))
            continue
        parsed[code] = (sorted(set(loaded["source_file"].to_list()))[:20], result)
    if parsed:
        written |= _publish_raw(con, parsed, policy, source_kind)
    return {code: written[code] for code in codes}


def _publish_raw(
    con: duckdb.DuckDBPyConnection,
    parsed: dict[str, tuple[list[str], ValidationResult]],
    policy: DataQualityResource,
    source_kind: str,
) -> dict[str, Written]:
    """Stage, audit and publish the validated codes of a range (``_write_raw``)."""
    codes = list(parsed)
    incoming = {
        "raw_option_chains": pl.concat([result.valid for _, result in parsed.values()]),
        "quarantined_quotes": pl.concat(
            [
                result.quarantined.with_columns(pl.lit(code).alias("weekly_code"))
                for code, (_, result) in parsed.items()
            ],
            how="vertical_relaxed",
        ),
    }
    with warehouse.staged_partitions(con, codes, incoming) as staged:
        stored = staged.read("raw_option_chains")
        audits = quality.audit_raw(
            stored, staged.types("raw_option_chains"), policy.max_arbitrage_violation_rate, codes
        )
        passed = [code for code in codes if quality.all_passed(audits[code])]
        if passed:
            staged.publish(passed, RAW_PUBLISH)
    published = stored.filter(pl.col("weekly_code").is_in(passed))
    metadata = _partition_metadata(con, "raw_option_chains", published, passed, PREVIEW_COLUMNS)
    written = {}
    for code, (files, result) in parsed.items():
        failure = quality.audit_failure("raw_option_chains", code, audits[code])
        if failure is not None:
            written[code] = Written({}, audits[code], failure)
            continue
        metadata[code] |= {
            "source": source_kind,
            "source_files": files,
            "bad_row_policy": policy.bad_rows,
            "quarantined_rows": result.quarantined.height,
            "quarantined_by_column": dg.MetadataValue.json(result.reason_counts()),
        }
        written[code] = Written(metadata[code], audits[code])
    return written


def _partition_metadata(
    con: duckdb.DuckDBPyConnection,
    table: str,
    published: pl.DataFrame,
    codes: Sequence[str],
    preview_columns: list[str],
    **aggregates: pl.Expr,
) -> dict[str, dict[str, Any]]:
    """The materialization metadata both steps give each published code of ``codes``,
    aggregated over the range's ``published`` rows in one pass (a ranged run materializes up
    to a thousand codes): row count, options, time range, preview and content hash, plus each
    of ``aggregates`` under its name, for the caller to shape. A code without rows (every
    quote of it quarantined) gets zeros and an empty preview."""
    stats = published.group_by("weekly_code").agg(
        rows=pl.len(), options=pl.col("option_symbol").n_unique(),
        first_ts=pl.col("ts").min(), last_ts=pl.col("ts").max(), **aggregates,
    )  # fmt: skip
    by_code = {row.pop("weekly_code"): row for row in stats.iter_rows(named=True)}
    previews = previews_md(published, preview_columns)
    hashes = warehouse.partition_hashes(con, table, codes)
    empty = {"rows": 0, "options": 0, "first_ts": None, "last_ts": None}
    metadata = {}
    for code in codes:
        row = by_code.get(code, empty)
        metadata[code] = {
            "dagster/row_count": row["rows"],
            "options": row["options"],
            "first_ts": str(row["first_ts"]),
            "last_ts": str(row["last_ts"]),
            "preview": previews.get(code) or preview_md(published.clear(), preview_columns),
            "content_hash": hashes[code],
            **{name: row[name] for name in aggregates if name in row},
        }
    return metadata


@_partition_writer("raw_option_chains", RAW_CHECKS)
def raw_option_chains(
    context: dg.AssetExecutionContext,
    source: ChainSourceResource,
    warehouse_db: WarehouseResource,
    quality_policy: DataQualityResource,
) -> Iterator[dg.AssetCheckResult | dg.AssetMaterialization | dg.MaterializeResult]:
    """Quotes of every option of each weekly code of the run, in the canonical schema
    (docs/design.md §3)."""
    with warehouse_db.connect() as con:
        written = _write_raw(con, source.build(), _codes(context), quality_policy, source.kind)
    yield from _results(context, RAW_CHECKS, written)


def _unsolved_lineage(
    con: duckdb.DuckDBPyConnection, staged: warehouse.StagedPartitions, codes: Sequence[str]
) -> pl.DataFrame:
    """The published ``raw_lineage`` of the staged rows whose IV did not solve: the only rows
    the IV audit can name (it locates offenders by file and row), not the whole range."""
    return warehouse.query(
        con,
        f"""SELECT l.* FROM raw_lineage l
        SEMI JOIN {staged.name("greeks_features")} s
            ON s.weekly_code = l.weekly_code AND s.option_symbol = l.option_symbol
            AND s.ts = l.ts AND s.iv_status <> 'ok'
        WHERE l.weekly_code IN ({warehouse.codes_sql(codes)})""",
    )


def _write_features(
    con: duckdb.DuckDBPyConnection, codes: Sequence[str], policy: DataQualityResource
) -> dict[str, Written]:
    """Compute, stage, audit and publish the Greeks of a range of codes, all at once.

    One read, one IV solve and one staging for the range, each code audited on its own rows
    and the codes that pass published in one transaction: per-code statements and
    transactions, not the arithmetic, decided the rate of a history's 364-row codes
    (benchmarks/pipeline.md). A code refused (no raw rows, or a failed check) leaves its
    published rows as they were and holds back none of the others.
    """
    raw = warehouse.read_partitions(con, "raw_option_chains", codes, ordered=False)
    held = set(raw["weekly_code"].unique())
    present = [code for code in codes if code in held]
    written = _no_raw_rows(con, [code for code in codes if code not in held])
    if not present:
        return written
    features = compute_features(raw)
    del raw
    with warehouse.staged_partitions(con, present, {"greeks_features": features}) as staged:
        audits = quality.audit_features(
            staged.read("greeks_features", AUDITED_FEATURE_COLUMNS, ordered=False),
            staged.types("greeks_features"),
            features.schema,
            _unsolved_lineage(con, staged, present),
            policy.iv_solve_rate_floor,
        )
        passed = [code for code in present if quality.all_passed(audits[code])]
        if passed:
            staged.publish(passed, FEATURE_PUBLISH)
    published = features.filter(pl.col("weekly_code").is_in(passed))
    metadata = _feature_metadata(con, published, passed)
    for code in present:
        failure = quality.audit_failure("greeks_features", code, audits[code])
        written[code] = Written(metadata.get(code, {}), audits[code], failure)
    return {code: written[code] for code in codes}


def _no_raw_rows(con: duckdb.DuckDBPyConnection, missing: list[str]) -> dict[str, Written]:
    """The refusal of each code of the range that ``raw_option_chains`` holds no rows of."""
    if not missing:
        return {}
    held = warehouse.query(con, "SELECT DISTINCT weekly_code FROM raw_option_chains")
    codes = ", ".join(sorted(held["weekly_code"])) or "nothing"
    return {
        code: Written(
            {},
            None,
            f"raw_option_chains holds no rows for weekly code {code!r} (materialize it "
            f"first, or check the code); it holds: {codes}",
        )
        for code in missing
    }


def _feature_metadata(
    con: duckdb.DuckDBPyConnection, published: pl.DataFrame, codes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Each published code's materialization metadata (``_partition_metadata``'s, and its IV
    statuses and median ATM vol)."""
    status = pl.col("iv_status")
    metadata = _partition_metadata(
        con, "greeks_features", published, codes, FEATURE_PREVIEW,
        median_atm_iv=pl.col("atm_iv").median(), **{s: (status == s).sum() for s in STATUSES},
    )  # fmt: skip
    for code_metadata in metadata.values():
        n = code_metadata["dagster/row_count"]
        rates = {s: code_metadata.pop(s) / n for s in STATUSES}
        median = code_metadata.pop("median_atm_iv")
        code_metadata |= {
            "iv_status_rates": dg.MetadataValue.json(rates),
            "iv_failure_rate": 1.0 - rates["ok"],
            "median_atm_iv": float(median or float("nan")),
        }
    return metadata


@_partition_writer("greeks_features", FEATURE_CHECKS, deps=[raw_option_chains])
def greeks_features(
    context: dg.AssetExecutionContext,
    warehouse_db: WarehouseResource,
    quality_policy: DataQualityResource,
) -> Iterator[dg.AssetCheckResult | dg.AssetMaterialization | dg.MaterializeResult]:
    """Mid, implied vol, Greeks, moneyness, tau and market features of each weekly code of
    the run."""
    # One connection for the whole step: the pool serializes writers anyway, and a second
    # open (with its checkpoint on close) cost more than the Greeks of a small code.
    with warehouse_db.connect() as con:
        written = _write_features(con, _codes(context), quality_policy)
    yield from _results(context, FEATURE_CHECKS, written)
