"""``portfolio_selection``: the options the hedging books are short, from every weekly code.

Thin, like the market-data assets: ``templates`` loads the template,
``book`` picks the options and cuts the time splits, and this module reads the
features of the active weekly codes (short read-only connection, only the needed columns)
and swaps the whole table in one transaction. A template or selection that fails writes
nothing, so downstream stages keep reading the previous selection.

``as_of`` (docs/design.md §6) bounds the work of the training stages on a long history: set, the
selection holds only the codes alive then (``book.active_codes``: first quote at or before
``as_of``, last quote after it), so a warehouse of ~1,000 weekly codes trains on the 4-5 a trader
would hold. Unset, every code of the ``weekly_code`` partitions is a candidate, as before: the
default is *not* the latest bar, because on the embedded synthetic market that would keep only
the last code(s) and change what ``make run`` trains. Both are recorded in the metadata.
"""

import dagster as dg
import polars as pl
from pydantic import Field

from hedge_pipeline.orchestration.metadata import preview_md
from hedge_pipeline.orchestration.partitions import weekly_code_partitions
from hedge_pipeline.orchestration.resources import WarehouseResource
from hedge_pipeline.stages.market_data.assets import greeks_features
from hedge_pipeline.stages.selection.book import (
    BOUNDARY_COLUMNS,
    SelectionError,
    alive_or_explain,
    latest_bar,
    parse_as_of,
    read_features,
    read_lifetimes,
    select_portfolio,
    selection_hash,
    split_sizes,
)
from hedge_pipeline.stages.selection.templates import (
    DEFAULT_TEMPLATE,
    TemplateError,
    find_template,
    load_template_file,
    with_split_mode,
)
from hedge_pipeline.tables import warehouse

PREVIEW_COLUMNS = [
    "weekly_code",
    "option_symbol",
    "option_type",
    "strike",
    "weight",
    "is_hedge_instrument",
    "rows",
]
MAX_PREVIEW_ROWS = 50


class SelectionConfig(dg.Config):
    """Run config: which template builds the books (launchpad or ``run_config``)."""

    template: str = Field(
        default=DEFAULT_TEMPLATE,
        description="portfolio template name (packaged or from HEDGE_PORTFOLIO_DIR)",
    )
    as_of: str | None = Field(
        default=None,
        description="ISO date or date/time (UTC unless an offset is given; a bare date is the "
        "end of that day), or 'latest' (the warehouse's latest bar): select only the weekly "
        "codes alive then (listed, not expired, still quoted). Unset: every weekly code",
    )
    split_mode: str | None = Field(
        default=None,
        description="the template's time split, unless set: per_code, global, or as_of (a "
        "walk-forward test: train and validate on the bars up to as_of, test on the rest)",
    )


@dg.asset(
    group_name="market_data",
    pool="duckdb_writer",
    kinds={"duckdb", "polars"},
    deps=[greeks_features],
    check_specs=[dg.AssetCheckSpec("every_active_code_selected", asset="portfolio_selection")],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL),
)
def portfolio_selection(
    context: dg.AssetExecutionContext, config: SelectionConfig, warehouse_db: WarehouseResource
) -> dg.MaterializeResult:
    """The options each weekly code's book is short, their weights, hedge option and splits."""
    codes = context.instance.get_dynamic_partitions(weekly_code_partitions.name)
    try:
        source = find_template(config.template)
        template = load_template_file(source.path)
        if config.split_mode is not None:
            template = with_split_mode(template, config.split_mode)
        as_of = None
        with warehouse_db.connect(read_only=True) as con:
            if config.as_of is not None:
                lifetimes = read_lifetimes(con, codes)
                as_of = parse_as_of(config.as_of, latest_bar(lifetimes))
                codes = alive_or_explain(lifetimes, as_of)
            features = read_features(con, codes)
        selection = select_portfolio(features, template, as_of)
    except (TemplateError, SelectionError) as exc:
        # A bad template or data that does not fit it does not get better on retry.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    frame = selection.frame
    # With weekly_codes 'all' every active code should get a book; say which did not, and why.
    unselected = dict(selection.skipped)
    if template.selection_criteria.weekly_codes == "all":
        stored = set(features["weekly_code"].unique())
        unselected |= {c: "no greeks_features rows yet" for c in codes if c not in stored}
    with warehouse_db.connect() as con:
        warehouse.replace_rows(con, {"portfolio_selection": frame})
    book = frame.filter(~pl.col("is_hedge_instrument"))
    splits = frame.unique("weekly_code").select("weekly_code", *BOUNDARY_COLUMNS)
    splits = splits.join(split_sizes(features, frame), on="weekly_code").sort("weekly_code")
    return dg.MaterializeResult(
        metadata={
            "template": template.name,
            "template_file": f"{source.path} ({source.origin})",
            "as_of": as_of.isoformat() if as_of is not None else "unset (every weekly code)",
            "active_codes": dg.MetadataValue.json(sorted(codes)),
            "dagster/row_count": frame.height,
            "options": book.height,
            "options_per_code": dg.MetadataValue.json(
                dict(book.group_by("weekly_code").len().sort("weekly_code").iter_rows())
            ),
            "calls": book.filter(pl.col("option_type") == "C").height,
            "puts": book.filter(pl.col("option_type") == "P").height,
            "hedge_instruments": frame.height - book.height,
            "weights_sum": float(book["weight"].sum()),
            "split_mode": template.time_series_params.split_mode,
            "embargo_bars": template.time_series_params.embargo_bars,
            "splits": preview_md(splits, rows=MAX_PREVIEW_ROWS),
            "skipped_codes": dg.MetadataValue.json(unselected),
            "preview": preview_md(frame, rows=MAX_PREVIEW_ROWS, columns=PREVIEW_COLUMNS),
        },
        data_version=dg.DataVersion(selection_hash(frame)),
        check_results=[
            dg.AssetCheckResult(
                check_name="every_active_code_selected",
                passed=not unselected,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"no options for {', '.join(sorted(unselected))}: their specialists have "
                    "no book to hedge"
                    if unselected
                    else "every active weekly code has a book"
                ),
                metadata={"skipped": dg.MetadataValue.json(unselected)},
            )
        ],
    )
