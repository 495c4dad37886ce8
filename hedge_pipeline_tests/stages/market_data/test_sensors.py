"""``new_weekly_codes_sensor`` against file drops in a real data directory."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from hedge_pipeline.orchestration.resources import ChainSourceResource
from hedge_pipeline.stages.market_data.sensors import new_weekly_codes_sensor
from hedge_pipeline_tests.conftest import small_book, write_drop


def _tick(instance: dg.DagsterInstance, raw: Path, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"source": ChainSourceResource(kind="files", raw_dir=str(raw))},
    )
    result = new_weekly_codes_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _covered(request: dg.RunRequest, order: list[str]) -> list[str]:
    """The codes a request's run materializes: its partition, or its range in ``order``."""
    if request.partition_key is not None:
        return [request.partition_key]
    start = order.index(request.tags["dagster/asset_partition_range_start"])
    return order[start : order.index(request.tags["dagster/asset_partition_range_end"]) + 1]


def _requested(result, instance: dg.DagsterInstance) -> list[str]:
    order = instance.get_dynamic_partitions("weekly_code")
    return sorted(code for r in result.run_requests or [] for code in _covered(r, order))


def test_sensor_adds_new_codes_once_and_reacts_only_to_changed_content(
    instance, data_dir: Path, synthetic_code_frame
):
    raw = data_dir / "raw"
    book = small_book(synthetic_code_frame)
    write_drop(book, raw, "NEW1")
    write_drop(book, raw, "NEW2")

    first = _tick(instance, raw, None)
    assert _requested(first, instance) == ["NEW1", "NEW2"]
    assert sorted(instance.get_dynamic_partitions("weekly_code")) == ["NEW1", "NEW2"]
    # Both new codes in one market-data run (adjacent partitions, one range).
    [ranged] = first.run_requests
    assert ranged.partition_key is None
    assert ranged.run_key.startswith("NEW1..NEW2@")

    second = _tick(instance, raw, first.cursor)
    assert _requested(second, instance) == []
    assert not second.dynamic_partitions_requests

    # Rewriting a file with the same bytes is not a change; new content is.
    path = raw / "NEW1" / "quotes.parquet"
    path.write_bytes(path.read_bytes())
    assert _requested(_tick(instance, raw, second.cursor), instance) == []
    write_drop(book.with_columns(bid=pl.col("bid") * 0.99), raw, "NEW1")
    third = _tick(instance, raw, second.cursor)
    assert _requested(third, instance) == ["NEW1"]
    assert third.run_requests[0].tags["hedge/trigger"] == "changed"

    write_drop(book, raw, "NEW3")
    fourth = _tick(instance, raw, third.cursor)
    assert _requested(fourth, instance) == ["NEW3"]
    assert list(fourth.dynamic_partitions_requests[0].partition_keys) == ["NEW3"]


def test_codes_already_partitioned_are_recorded_without_a_run(
    instance, data_dir, synthetic_code_frame
):
    raw = data_dir / "raw"
    write_drop(small_book(synthetic_code_frame), raw, "OLD1")
    instance.add_dynamic_partitions("weekly_code", ["OLD1"])
    first = _tick(instance, raw, None)
    assert _requested(first, instance) == []
    assert "OLD1" in first.cursor
