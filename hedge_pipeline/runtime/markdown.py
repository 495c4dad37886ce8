"""Markdown tables: the one renderer behind Dagster metadata, training reports and CLIs.

Pure Python, so a training child (which never imports Dagster) and the Dagster assets render
tables alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], right_from: int | None = None
) -> str:
    """A GitHub-flavoured markdown table; cells are rendered with ``str``. Columns from index
    ``right_from`` on are right-aligned (numbers), the others left-aligned."""
    first = len(columns) if right_from is None else right_from
    rule = ["---" if i < first else "---:" for i in range(len(columns))]
    lines = [columns, rule, *([str(cell) for cell in row] for row in rows)]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)
