"""Text for ``hedge portfolios list`` and ``hedge portfolios info NAME``.

``template_info`` also applies the template to the warehouse's greeks_features (every weekly
code stored there, read-only), so a researcher sees what a template would select, and how
much data each split would hold, before materializing anything. Both functions raise
``TemplateError`` for an unknown name or an unusable ``HEDGE_PORTFOLIO_DIR``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from hedge_pipeline.stages.selection.book import (
    SPLITS,
    SelectionError,
    read_features,
    select_portfolio,
    split_sizes,
)
from hedge_pipeline.stages.selection.templates import (
    DEFAULT_TEMPLATE,
    ENV_DIR,
    PortfolioTemplate,
    TemplateError,
    find_template,
    load_template_file,
    template_files,
)
from hedge_pipeline.tables import warehouse


def list_templates() -> str:
    """One line per template: name, where it comes from, description (or why it is invalid)."""
    rows = []
    for name, source in template_files().items():
        try:
            about = load_template_file(source.path).description
        except TemplateError as exc:
            about = f"INVALID: {str(exc).splitlines()[0]}"
        marker = " (default)" if name == DEFAULT_TEMPLATE else ""
        rows.append((name + marker, source.origin, about))
    width = max(len(r[0]) for r in rows)
    origin_width = max(len(r[1]) for r in rows)
    lines = [f"{n:<{width}}  {o:<{origin_width}}  {d}" for n, o, d in rows]
    lines.append(f"\nmore templates: *.json files in the directory named by {ENV_DIR}")
    lines.append("details and what a template selects: hedge portfolios info NAME")
    return "\n".join(lines)


def template_info(name: str, warehouse_path: Path) -> str:
    """The template's settings, then what it selects from the warehouse's greeks_features."""
    source = find_template(name)
    template = load_template_file(source.path)
    return "\n".join(
        [
            f"{template.name}: {template.description}",
            f"file: {source.path} ({source.origin})",
            "",
            *_settings(template),
            "",
            *_against_warehouse(template, warehouse_path),
        ]
    )


def _settings(template: PortfolioTemplate) -> list[str]:
    criteria = template.selection_criteria
    codes = criteria.weekly_codes
    lo, hi = criteria.strike_range
    hedge = template.hedge_option
    split = template.time_series_params
    ratios = split.split_ratios
    training = template.training_params.model_dump(exclude_none=True)
    return [
        f"weekly codes:   {codes if codes == 'all' else ', '.join(codes)}",
        f"option type:    {criteria.option_type}",
        f"strike range:   moneyness percentiles {lo:g} to {hi:g} of each code's options",
        f"min data size:  {criteria.min_data_size} ok rows per option",
        f"sort by:        {criteria.sort_by}",
        f"max options:    {template.max_options} per weekly code",
        f"weights:        {template.position_weights} (units short per option)",
        "hedge option:   "
        + (
            "none (delta hedge with the underlying)"
            if hedge is None
            else f"{hedge.option_type}, moneyness percentiles {hedge.strike_range[0]:g} to "
            f"{hedge.strike_range[1]:g}, by {hedge.sort_by}, never an option of the book"
        ),
        "training:       " + ", ".join(f"{k}={v}" for k, v in training.items()),
        f"time split:     {split.split_mode}, train/validation/test {ratios.train:g}/"
        f"{ratios.validation:g}/{ratios.test:g}, embargo {split.embargo_bars} bars",
    ]


def _against_warehouse(template: PortfolioTemplate, path: Path) -> list[str]:
    features = _stored_features(path)
    if features is None or features.is_empty():
        return [f"no greeks_features in {path} yet: materialize the market data (hedge run)"]
    try:
        selection = select_portfolio(features, template)
    except SelectionError as exc:
        return [f"against {path}: the selection fails: {exc}"]
    frame = selection.frame
    sizes = {row["weekly_code"]: row for row in split_sizes(features, frame).iter_rows(named=True)}
    codes = features["weekly_code"].n_unique()
    lines = [f"against {path} ({codes} weekly codes in greeks_features):"]
    for (code,), options in frame.group_by("weekly_code", maintain_order=True):
        first = options.row(0, named=True)
        book = options.filter(~pl.col("is_hedge_instrument")).height
        data = " / ".join(f"{s} {sizes[code][s]}" for s in SPLITS)
        lines.append(f"  {code}: {book} options, ok rows per split: {data}")
        for option in options.iter_rows(named=True):
            role = "hedge " if option["is_hedge_instrument"] else f"short {option['weight']:g}"
            lines.append(
                f"    {option['option_symbol']:<16} {option['option_type']} "
                f"{option['strike']:>10g}  {role:<10} {option['rows']} ok rows"
            )
        lines.append(
            "    "
            + ", ".join(
                f"{s} {_ts(first[f'{s}_start'])} to {_ts(first[f'{s}_end'])}" for s in SPLITS
            )
        )
    lines.extend(f"  {code}: skipped: {why}" for code, why in selection.skipped.items())
    return lines


def _stored_features(path: Path) -> pl.DataFrame | None:
    """Every weekly code's features in the warehouse, or None without a warehouse or table
    (checked first: opening a missing file would create it)."""
    if not path.exists():
        return None
    with warehouse.connect(path, read_only=True) as con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        if "greeks_features" not in tables:
            return None
        codes = con.execute("SELECT DISTINCT weekly_code FROM greeks_features").fetchall()
        return read_features(con, sorted(c for (c,) in codes))


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")
