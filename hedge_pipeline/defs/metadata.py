"""Turning frames and check outcomes into Dagster metadata and check results."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl

from hedge_pipeline.chains.quality import CheckOutcome


def preview_md(
    frame: pl.DataFrame, rows: int = 8, columns: list[str] | None = None
) -> dg.MetadataValue:
    """A small markdown table of the first rows, for the asset's materialization page."""
    head = frame.select(columns or frame.columns).head(rows)
    with pl.Config(
        tbl_formatting="MARKDOWN",
        tbl_hide_column_data_types=True,
        tbl_hide_dataframe_shape=True,
        tbl_rows=rows,
        tbl_cols=-1,
        fmt_str_lengths=40,
        tbl_width_chars=10_000,  # never wrap: the UI renders the markdown, not a terminal
    ):
        return dg.MetadataValue.md(str(head))


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


def time_range(frame: pl.DataFrame) -> dict[str, str]:
    return {
        "first_ts": str(frame["ts"].min()),
        "last_ts": str(frame["ts"].max()),
    }
