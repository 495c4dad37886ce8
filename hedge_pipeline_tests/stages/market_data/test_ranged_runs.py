"""Runs that carry a range of weekly codes (``BackfillPolicy.multi_run``, as a backfill or
``hedge run`` makes them), through real in-process Dagster runs into a real DuckDB file.

Each code of the range is written on its own: every published code gets a materialization of
its own (its row count and content hash, not the range's), and a code refused by its audit
holds back neither the others nor the tables' agreement with the instance: the published codes
are recorded as materialized, the refused one is not, its published partition keeps its
content hash, and the run fails once with a message naming it, file, row and column.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.stages.market_data.helpers import below_intrinsic_book, resources

CODES = ("RNG1", "RNG2", "RNG3")


@pytest.fixture
def raw(instance, data_dir: Path, synthetic_code_frame) -> Path:
    """The files source's folder with a good book of each code, each a different size (so a
    materialization carrying the range's numbers instead of its own would show)."""
    folder = data_dir / "raw"
    for i, code in enumerate(CODES):
        write_drop(small_book(synthetic_code_frame, options=4 + 2 * i), folder, code)
    instance.add_dynamic_partitions("weekly_code", list(CODES))
    return folder


def _ranged(instance: dg.DagsterInstance, raw: Path) -> dg.ExecuteInProcessResult:
    """One run of both market-data assets over the whole range, as a backfill launches it."""
    return dg.materialize(
        [raw_option_chains, greeks_features],
        instance=instance,
        resources=resources(kind="files", raw_dir=raw),
        tags={ASSET_PARTITION_RANGE_START_TAG: CODES[0], ASSET_PARTITION_RANGE_END_TAG: CODES[-1]},
        raise_on_error=False,
    )


def _published(table: str) -> dict[str, tuple[int, str]]:
    """Each code's row count and content hash in ``table``."""
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        counts = dict(
            con.execute(f"SELECT weekly_code, count(*) FROM {table} GROUP BY 1").fetchall()
        )
        return {code: (n, warehouse.partition_hash(con, table, code)) for code, n in counts.items()}


def _recorded(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, tuple[int, str]]:
    """Each materialized partition's row count and content hash, as the run recorded them."""
    return {
        m.partition: (m.metadata["dagster/row_count"].value, m.metadata["content_hash"].value)
        for m in result.asset_materializations_for_node(asset)
    }


def test_a_range_materializes_each_code_with_its_own_numbers(instance, raw: Path):
    result = _ranged(instance, raw)

    assert result.success
    for asset in ("raw_option_chains", "greeks_features"):
        recorded = _recorded(result, asset)
        assert recorded == _published(asset)
        assert sorted(recorded) == list(CODES)
        assert len({n for n, _ in recorded.values()}) == len(CODES)  # not the range's numbers
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 8 and all(e.passed for e in evaluations)  # six raw, two features
    by_code = {e.check_name: e.metadata["by_code"].value for e in evaluations}
    assert set(by_code["static_no_arbitrage"]) == set(CODES)


def test_a_refused_code_holds_back_neither_the_others_nor_the_record(instance, raw: Path):
    """The range's middle code is re-dropped with three quotes above their static bound, after
    a good version of it was published: the run publishes and records the two others, keeps the
    middle one's published rows, and fails once naming it."""
    assert _ranged(instance, raw).success
    before = _published("raw_option_chains")[CODES[1]]
    book = pl.read_parquet(raw / CODES[1] / "quotes.parquet").with_row_index("i")
    bound = pl.when(pl.col("option_type") == "C").then("underlying_price").otherwise("strike")
    hit = pl.col("i").is_in([3, 40, 80])
    stale = book.with_columns(
        bid=pl.when(hit).then(bound * 1.05).otherwise("bid"),
        ask=pl.when(hit).then(bound * 1.06).otherwise("ask"),
    ).drop("i")
    write_drop(stale, raw, CODES[1])

    result = _ranged(instance, raw)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "raw_option_chains"
    assert not [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(
        f"1 of 3 weekly codes of this run not published ({CODES[1]}); the other 2 were\n"
        f"raw_option_chains '{CODES[1]}' not published: blocking check(s) static_no_arbitrage"
    )
    assert f"{CODES[1]}/quotes.parquet, row " in message and "column 'bid'" in message
    assert sorted(_recorded(result, "raw_option_chains")) == [CODES[0], CODES[2]]
    published = _published("raw_option_chains")
    assert published[CODES[1]] == before
    assert {c: published[c] for c in (CODES[0], CODES[2])} == _recorded(result, "raw_option_chains")
    [arbitrage] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "static_no_arbitrage"
    ]
    assert not arbitrage.passed
    assert arbitrage.description == f"failed on 1 of 3 weekly codes: {CODES[1]}"
    assert arbitrage.metadata["worst_offenders"].value
    assert not result.asset_materializations_for_node("greeks_features")  # its step never ran


def test_a_code_refused_by_the_features_audit_leaves_the_range_published(
    instance, raw: Path, synthetic_code_frame
):
    """The features of a range are computed, staged and audited at once, but each code is
    judged on its own rows: the middle code's mids below intrinsic fail its IV solve rate,
    its published features keep their hash, and the two others are published and recorded
    with the same numbers as a clean run gives them."""
    assert _ranged(instance, raw).success
    clean = _published("greeks_features")
    book, unsolved = below_intrinsic_book(synthetic_code_frame)
    write_drop(book.drop("i"), raw, CODES[1])

    result = _ranged(instance, raw)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "greeks_features"
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith(
        f"1 of 3 weekly codes of this run not published ({CODES[1]}); the other 2 were\n"
        f"greeks_features '{CODES[1]}' not published: blocking check(s) iv_solve_rate"
    )
    assert f"{CODES[1]}/quotes.parquet, row " in message and "column 'bid'" in message
    assert sorted(_recorded(result, "raw_option_chains")) == list(CODES)
    published = _published("greeks_features")
    assert published == clean
    assert _recorded(result, "greeks_features") == {c: clean[c] for c in (CODES[0], CODES[2])}
    [rate] = [e for e in result.get_asset_check_evaluations() if e.check_name == "iv_solve_rate"]
    assert not rate.passed and rate.description == f"failed on 1 of 3 weekly codes: {CODES[1]}"
    solved = 1 - unsolved.height / book.height
    assert rate.metadata["by_code"].value[CODES[1]].startswith(f"IV solved for {solved:.2%}")
