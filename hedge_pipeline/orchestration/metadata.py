"""Turning frames and check outcomes into Dagster metadata and check results."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl

from hedge_pipeline.runtime.markdown import markdown_table
from hedge_pipeline.stages.market_data.quality import CheckOutcome


def preview_md(
    frame: pl.DataFrame, rows: int = 8, columns: list[str] | None = None
) -> dg.MetadataValue:
    """A markdown table of the first rows for the materialization page: never wrapped,
    timestamps to the minute (UTC)."""
    return _markdown(_minutes(frame.select(columns or frame.columns).head(rows)))


def previews_md(
    frame: pl.DataFrame, columns: list[str], rows: int = 8
) -> dict[str, dg.MetadataValue]:
    """``preview_md`` of each weekly code's rows of ``frame``, formatted in one pass: a
    ranged run materializes up to a thousand codes, and one call per code cost more than
    their Greeks."""
    heads = _minutes(
        frame.select("weekly_code", *columns)
        .group_by("weekly_code", maintain_order=True)
        .head(rows)
    )
    by_code: dict[str, list[tuple]] = {}
    for code, *values in heads.iter_rows():
        by_code.setdefault(code, []).append(tuple(values))
    return {
        code: dg.MetadataValue.md(markdown_table(columns, values))
        for code, values in by_code.items()
    }


def _minutes(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col(pl.Datetime).dt.strftime("%Y-%m-%d %H:%M"))


def _markdown(frame: pl.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(frame.columns, frame.iter_rows()))


def check_result(name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {"description": outcome.description}
    for key, value in outcome.metadata.items():
        metadata[key] = (
            value if isinstance(value, int | float | str) else dg.MetadataValue.json(value)
        )
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity[outcome.severity],
        metadata=metadata,
        description=outcome.description,
    )
