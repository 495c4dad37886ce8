"""From greeks_features rows and a template to the options a book is short (docs/design.md §1, #3).

The rules, per weekly code:

1. Moneyness of an option is ln(K / F̃), F̃ the median forward of the code over its bars.
   It equals the option's median log-moneyness when the option is quoted on every bar, and a
   call and a put of one strike get exactly the same value, so gaps in one of them never push
   it across a percentile boundary.
2. Candidates lie between the ``strike_range`` percentiles (linear interpolation, as
   ``numpy.percentile``) of the moneyness of all the code's options, have the template's
   option type and at least ``min_data_size`` rows with ``iv_status = 'ok'``. Percentiles
   describe the code's strike ladder: once the forward has drifted from the ladder's centre
   the money sits off-centre in it, so near-the-money templates use a wide band and let
   ``atm_distance`` pick within it.
3. Candidates are ranked by ``sort_by`` (total volume and mean open interest descending;
   distance from the money |moneyness| and median spread ascending), ties broken by distance
   from the money then option symbol, and the first ``max_options`` are taken.
4. Weights are units short: ``equal`` gives 1 each; ``vega`` gives each option the same vega
   exposure (median vega over ok rows), scaled so the weights average 1; a list gives the
   i-th ranked option the i-th weight.
5. A template with ``hedge_option`` adds the best-ranked candidate of that spec that the book
   is not short, with weight 0 and ``is_hedge_instrument`` set.
6. A code's bars (timestamps at which any of its options has an ok row) are split by time
   into train, validation and test (ratios of the bars left after two embargoes of
   ``embargo_bars``), per code or once over the union of the selected codes' bars
   (``split_mode``); or, for a walk-forward test of the lineage (``split_mode`` ``as_of``),
   at ``as_of``: the test is every bar after it, the options are chosen from the rows
   known at it (:func:`split_at`). Boundaries are inclusive timestamps.

With ``weekly_codes = 'all'`` a code nothing matches is skipped (and reported); a code named
explicitly must match.

The active set (``as_of``, docs/design.md §6): with ~1,000 weekly codes in a history, the
training stages should work on the few codes a trader would hold at one moment, not on all of
them. A code is *alive* at ``as_of`` when its first quote is at or before ``as_of`` (it is
listed), it expires after ``as_of`` (at its expiry it is worth its payoff: nothing to hedge),
and it is still quoted: its last quote is after ``as_of``, or is the warehouse's latest bar
(the data ends there, not the code's quotes: at the latest bar the codes not yet expired are
exactly the ones a trader holds). A code whose quotes stop early (a delisting, a feed that
ends) stops being active at its last quote. ``as_of: latest`` is the warehouse's latest bar.
``as_of`` unset selects from every code, as before. Everything but ``read_features`` and
``read_lifetimes`` is pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import polars as pl

from hedge_pipeline.stages.selection.templates import (
    HedgeOption,
    PortfolioTemplate,
    SortKey,
    SplitRatios,
)
from hedge_pipeline.tables import warehouse

if TYPE_CHECKING:
    import duckdb

FEATURE_COLUMNS = (
    "weekly_code",
    "option_symbol",
    "option_type",
    "strike",
    "ts",
    "forward",
    "iv_status",
    "volume",
    "open_interest",
    "spread",
    "vega",
)
SPLITS = ("train", "val", "test")
BOUNDARY_COLUMNS = tuple(f"{split}_{end}" for split in SPLITS for end in ("start", "end"))
SELECTION_SCHEMA: dict[str, pl.DataType] = {
    "weekly_code": pl.String(),
    "option_symbol": pl.String(),
    "option_type": pl.String(),
    "strike": pl.Float64(),
    "weight": pl.Float64(),
    "is_hedge_instrument": pl.Boolean(),
    "rows": pl.Int64(),
    **{c: pl.Datetime("us", "UTC") for c in BOUNDARY_COLUMNS},
    "template": pl.String(),
}
# Column and direction each sort key ranks by (True: descending).
_SORT: dict[str, tuple[str, bool]] = {
    "volume": ("volume", True),
    "open_interest": ("open_interest", True),
    "atm_distance": ("atm_distance", False),
    "spread": ("spread", False),
}


class SelectionError(ValueError):
    """The template cannot be applied to these rows (unknown code, nothing matches, …)."""


@dataclass(frozen=True)
class Selection:
    frame: pl.DataFrame  # SELECTION_SCHEMA; codes as requested, book by rank, then hedge
    skipped: dict[str, str]  # weekly code -> why nothing was selected ('all' only)


def read_features(con: duckdb.DuckDBPyConnection, codes: list[str]) -> pl.DataFrame:
    """The columns the rules need, for ``codes``, timestamps as UTC (a fraction of the table)."""
    columns = ", ".join(f'"{c}"' for c in FEATURE_COLUMNS)
    return warehouse.query(
        con, f"SELECT {columns} FROM greeks_features WHERE list_contains($1, weekly_code)", [codes]
    )


def read_lifetimes(con: duckdb.DuckDBPyConnection, codes: list[str]) -> pl.DataFrame:
    """``weekly_code, first_ts, last_ts, expiry`` of each of ``codes`` with greeks_features
    rows: the code's first and last quote and its (latest) expiry, UTC: what decides whether
    it is alive at an ``as_of``."""
    return warehouse.query(
        con,
        "SELECT weekly_code, min(ts) AS first_ts, max(ts) AS last_ts, max(expiry) AS expiry "
        "FROM greeks_features WHERE list_contains($1, weekly_code) "
        "GROUP BY weekly_code ORDER BY weekly_code",
        [codes],
    )


LATEST = "latest"


def parse_as_of(text: str, latest: datetime | None = None) -> datetime:
    """``as_of`` as an aware UTC datetime.

    ISO 8601 date or date/time; without an offset it is UTC (the warehouse's clock). A bare
    date means the end of that day, so ``as_of: 2008-10-10`` has seen every bar of the 10th
    (and the code expiring that day has expired), which is how "as of a date" reads.
    ``latest`` is the latest bar, given as ``latest``.

    >>> parse_as_of("latest", datetime(2018, 12, 31, 21, tzinfo=UTC)).isoformat()
    '2018-12-31T21:00:00+00:00'
    """
    text = text.strip()
    if text.lower() == LATEST:
        if latest is None:
            raise SelectionError("as_of 'latest': there is no bar yet")
        return latest.astimezone(UTC)
    try:
        if len(text) == len("YYYY-MM-DD"):
            when = datetime.combine(date.fromisoformat(text), time.max)
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        raise SelectionError(
            f"as_of {text!r} is not an ISO date or date/time (e.g. 2008-10-10 or "
            "2008-10-10T20:00:00Z)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def active_codes(lifetimes: pl.DataFrame, as_of: datetime) -> list[str]:
    """The codes of ``lifetimes`` (:func:`read_lifetimes`) alive at ``as_of``, sorted: listed
    (first quote <= as_of), not expired (expiry > as_of) and still quoted (last quote >
    as_of, or the last quote is the latest bar of all: the data ends there)."""
    when = pl.lit(as_of, dtype=pl.Datetime("us", "UTC"))
    ts = pl.Datetime("us", "UTC")
    last = pl.col("last_ts").cast(ts)
    alive = lifetimes.filter(
        (pl.col("first_ts").cast(ts) <= when)
        & (pl.col("expiry").cast(ts) > when)
        & ((last > when) | (last == last.max()))
    )
    return sorted(alive["weekly_code"])


def alive_or_explain(lifetimes: pl.DataFrame, as_of: datetime) -> list[str]:
    """:func:`active_codes` at ``as_of``; none is a :class:`SelectionError` that says what the
    quotes span (what a user needs to pick another ``as_of``)."""
    alive = active_codes(lifetimes, as_of)
    if not alive:
        span = (
            f"its codes' quotes span {lifetimes['first_ts'].min()} to {lifetimes['last_ts'].max()}"
            if lifetimes.height
            else "it holds no greeks_features rows of the weekly_code partitions"
        )
        raise SelectionError(f"no weekly code is alive at as_of {as_of.isoformat()}: {span}")
    return alive


def latest_complete_as_of(lifetimes: pl.DataFrame) -> datetime:
    """The latest ``as_of`` whose alive codes are all quoted to their expiry in ``lifetimes``:
    just before the first code that expires after the latest bar is listed.

    At the latest bar itself, the codes alive are the youngest: on a daily history of
    four-week codes they hold 17, 12, 7 and 2 bars, too few to split into train, validation
    and test. Just before the first of those was listed, the codes alive ran their whole
    lives within the data: a backtest of the most recent complete set, what a history run
    trains on unless told another ``as_of``.

    >>> from datetime import timedelta
    >>> t = datetime(2018, 11, 2, 21, tzinfo=UTC)
    >>> week = timedelta(weeks=1)
    >>> lifetimes = pl.DataFrame({"weekly_code": ["A", "B", "C"],
    ...     "first_ts": [t, t + week, t + 2 * week], "last_ts": [t + 4 * week] * 3,
    ...     "expiry": [t + 4 * week, t + 5 * week, t + 6 * week]})
    >>> latest_complete_as_of(lifetimes).isoformat()  # B is cut off: just before its listing
    '2018-11-09T20:59:59.999999+00:00'
    """
    last = lifetimes["last_ts"].max()
    cut = lifetimes.filter(pl.col("expiry") > last)["first_ts"].min()
    return (last if cut is None else min(cut, last)) - timedelta(microseconds=1)


def latest_bar(lifetimes: pl.DataFrame) -> datetime | None:
    """The latest quote of ``lifetimes``: what ``as_of: latest`` means."""
    return lifetimes["last_ts"].max() if lifetimes.height else None


def option_stats(features: pl.DataFrame) -> pl.DataFrame:
    """One row per option: moneyness, ok rows and the liquidity measures the sort keys use."""
    forward = (
        features.group_by("weekly_code", "ts")
        .agg(pl.col("forward").median())
        .group_by("weekly_code")
        .agg(code_forward=pl.col("forward").median())
    )
    return (
        features.group_by("weekly_code", "option_symbol")
        .agg(
            pl.col("option_type").first(),
            pl.col("strike").first(),
            rows=(pl.col("iv_status") == "ok").sum().cast(pl.Int64),
            volume=pl.col("volume").sum(),
            open_interest=pl.col("open_interest").mean(),
            spread=pl.col("spread").median(),
            vega=pl.col("vega").median(),
        )
        .join(forward, on="weekly_code")
        .with_columns(moneyness=(pl.col("strike") / pl.col("code_forward")).log())
        .with_columns(atm_distance=pl.col("moneyness").abs())
        .drop("code_forward")
        .sort("weekly_code", "option_symbol")
    )


def select_portfolio(
    features: pl.DataFrame, template: PortfolioTemplate, as_of: datetime | None = None
) -> Selection:
    """Apply ``template`` to greeks_features rows (at least ``FEATURE_COLUMNS``).

    ``as_of`` matters to the ``as_of`` split mode only (required there): the options are then
    chosen from the rows at or before it (moneyness, ok rows, liquidity as known then), and
    each code's bars are cut at it (:func:`split_at`).
    """
    if features.is_empty():
        raise SelectionError("greeks_features holds no rows for the active weekly codes")
    params = template.time_series_params
    known = features
    books: dict[str, pl.DataFrame] = {}
    skipped: dict[str, str] = {}
    if params.split_mode == "as_of":
        if as_of is None:
            raise SelectionError(
                f"template {template.name!r}: split_mode 'as_of' needs the selection's as_of "
                "(the date that ends training and starts the test)"
            )
        known = features.filter(pl.col("ts") <= as_of)
        if known.is_empty():
            raise SelectionError(f"no greeks_features row at or before as_of {as_of.isoformat()}")
        unlisted = features.group_by("weekly_code").agg(pl.col("ts").min()).sort("weekly_code")
        for code, first in unlisted.filter(pl.col("ts") > as_of).iter_rows():
            skipped[code] = f"listed after as_of {as_of.isoformat()} (first row {first})"
    stats = option_stats(known)
    ok_bars = features.filter(pl.col("iv_status") == "ok").select("weekly_code", "ts").unique()
    for code in _requested_codes(stats, template):
        book = _pick_code(stats.filter(pl.col("weekly_code") == code), template)
        if isinstance(book, pl.DataFrame) and params.split_mode == "per_code":
            book = _with_split(book, _bars_of(ok_bars, book), template)
        elif isinstance(book, pl.DataFrame) and params.split_mode == "as_of":
            assert as_of is not None
            book = _with_split(book, _bars_of(ok_bars, book), template, as_of)
        if isinstance(book, str):
            skipped[code] = book
        else:
            books[code] = book
    if not books or (skipped and template.selection_criteria.weekly_codes != "all"):
        raise SelectionError(
            f"template {template.name!r} selects nothing for "
            + "; ".join(f"{code}: {why}" for code, why in skipped.items())
        )
    picked = pl.concat(books.values())
    if params.split_mode == "global":
        picked = _with_split(picked, _bars_of(ok_bars, picked), template)
        if isinstance(picked, str):
            raise SelectionError(f"template {template.name!r}, global split: {picked}")
    frame = (
        picked.with_columns(template=pl.lit(template.name))
        .select(list(SELECTION_SCHEMA))
        .cast(SELECTION_SCHEMA)
    )
    return Selection(frame=frame, skipped=skipped)


def _bars_of(ok_bars: pl.DataFrame, options: pl.DataFrame) -> pl.Series:
    """The bars at which any option of the codes of ``options`` has an ok row: a code's
    timeline, the same whichever of its options a template picks."""
    return ok_bars.filter(pl.col("weekly_code").is_in(options["weekly_code"].implode()))["ts"]


def _with_split(
    options: pl.DataFrame,
    bars: pl.Series,
    template: PortfolioTemplate,
    as_of: datetime | None = None,
) -> pl.DataFrame | str:
    params = template.time_series_params
    if as_of is None:
        cut = split_bars(bars, params.split_ratios, params.embargo_bars)
    else:
        training = template.training_params
        episode = (training.n_steps or 1) * (training.rebalance_bars or 1) + 1
        cut = split_at(bars, params.split_ratios, params.embargo_bars, as_of, episode)
    if isinstance(cut, str):
        return cut
    return options.with_columns(
        pl.lit(value, dtype=pl.Datetime("us", "UTC")).alias(column)
        for column, value in zip(BOUNDARY_COLUMNS, cut, strict=True)
    )


def _requested_codes(stats: pl.DataFrame, template: PortfolioTemplate) -> list[str]:
    known = sorted(set(stats["weekly_code"]))
    wanted = template.selection_criteria.weekly_codes
    if wanted == "all":
        return known
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise SelectionError(
            f"template {template.name!r} names weekly code {unknown[0]!r}, which has no "
            f"greeks_features rows; known: {', '.join(known)}"
        )
    return list(dict.fromkeys(wanted))


def _candidates(
    stats: pl.DataFrame, strike_range: tuple[float, float], option_type: str, min_rows: int
) -> tuple[pl.DataFrame, str]:
    """Options of one code passing the filters, and how many survived each (for errors)."""
    lo, hi = strike_range
    lo_q = stats["moneyness"].quantile(lo / 100.0, "linear")
    hi_q = stats["moneyness"].quantile(hi / 100.0, "linear")
    in_band = stats.filter(pl.col("moneyness").is_between(lo_q, hi_q))
    typed = (
        in_band if option_type == "both" else in_band.filter(pl.col("option_type") == option_type)
    )
    enough = typed.filter(pl.col("rows") >= min_rows)
    funnel = (
        f"{stats.height} options, {in_band.height} within moneyness percentiles "
        f"[{lo:g}, {hi:g}], {typed.height} of type {option_type}, {enough.height} with "
        f">= {min_rows} ok rows"
    )
    return enough, funnel


def _ranked(candidates: pl.DataFrame, sort_by: SortKey) -> pl.DataFrame:
    column, descending = _SORT[sort_by]
    return candidates.sort(
        [column, "atm_distance", "option_symbol"],
        descending=[descending, False, False],
        nulls_last=True,
    )


def _pick_code(stats: pl.DataFrame, template: PortfolioTemplate) -> pl.DataFrame | str:
    """The code's book (and hedge option), or why there is none."""
    criteria = template.selection_criteria
    candidates, funnel = _candidates(
        stats, criteria.strike_range, criteria.option_type, criteria.min_data_size
    )
    if candidates.is_empty():
        return f"no option matches ({funnel})"
    # Capped at the candidates: a template may ask for more options than any code has, and
    # polars' head() overflows on counts beyond 64 bits (max_options: 1e30 in a JSON file).
    book = _ranked(candidates, criteria.sort_by).head(min(template.max_options, candidates.height))
    book = book.with_columns(
        weight=_weights(book, template.position_weights), is_hedge_instrument=pl.lit(False)
    )
    if template.hedge_option is None:
        return book
    hedge = _hedge(stats, book, template.hedge_option, criteria.min_data_size)
    if isinstance(hedge, str):
        return hedge
    return pl.concat([book, hedge])


def _weights(book: pl.DataFrame, spec: str | list[float]) -> pl.Series:
    if spec == "equal":
        return pl.Series([1.0] * book.height)
    if spec == "vega":
        vega = book["vega"]
        if (vega <= 0).any():
            raise SelectionError(
                "vega weights need a positive median vega; "
                f"{book.filter(pl.col('vega') <= 0)['option_symbol'][0]} has none"
            )
        return (1.0 / vega) / (1.0 / vega).mean()
    return pl.Series(spec[: book.height], dtype=pl.Float64)


def _hedge(
    stats: pl.DataFrame, book: pl.DataFrame, spec: HedgeOption, min_rows: int
) -> pl.DataFrame | str:
    """The hedge option is never one the book is short: hedging an option with itself would
    make the problem trivial (buy it back) and say nothing about hedging the book."""
    candidates, funnel = _candidates(stats, spec.strike_range, spec.option_type, min_rows)
    candidates = candidates.filter(~pl.col("option_symbol").is_in(book["option_symbol"].implode()))
    if candidates.is_empty():
        return f"no hedge option outside the book ({funnel}, all of them in the book)"
    return (
        _ranked(candidates, spec.sort_by)
        .head(1)
        .with_columns(weight=pl.lit(0.0), is_hedge_instrument=pl.lit(True))
    )


def split_bars(ts: pl.Series, ratios: SplitRatios, embargo: int) -> tuple[datetime, ...] | str:
    """(train_start, train_end, val_start, val_end, test_start, test_end) over the distinct
    bars ``ts``, with ``embargo`` bars dropped at each boundary; or why it cannot be cut.

    Train and validation get ``floor(ratio × usable bars)`` (at least one bar each), test the
    rest, so rounding never costs the held-out period a bar.
    """
    bars = ts.unique().sort()
    usable = bars.len() - 2 * embargo
    n_train = max(1, int(usable * ratios.train))
    n_val = max(1, int(usable * ratios.validation))
    if usable - n_train - n_val < 1:
        return (
            f"{bars.len()} bars are too few to split into train, validation and test "
            f"with {embargo} embargo bars at each boundary"
        )
    val_first = n_train + embargo
    test_first = val_first + n_val + embargo
    return (
        bars[0],
        bars[n_train - 1],
        bars[val_first],
        bars[val_first + n_val - 1],
        bars[test_first],
        bars[-1],
    )


def split_at(
    ts: pl.Series, ratios: SplitRatios, embargo: int, as_of: datetime, min_bars: int = 1
) -> tuple[datetime, ...] | str:
    """The boundaries of :func:`split_bars` for a walk-forward test at ``as_of``: every bar
    after ``as_of`` is test; the bars at or before it, less an embargo at each end (the last
    ones' targets would look past ``as_of``), are cut into train and validation by the ratio
    of their two shares. Each split needs ``min_bars`` (one episode's); otherwise, why the
    bars cannot be cut so.

    >>> from datetime import timedelta
    >>> t = datetime(2008, 10, 1, 20, tzinfo=UTC)
    >>> bars = pl.Series([t + timedelta(days=i) for i in range(10)])
    >>> ratios = SplitRatios(train=0.6, validation=0.2, test=0.2)
    >>> cut = split_at(bars, ratios, 1, t + timedelta(days=6), min_bars=2)
    >>> [c.day for c in cut]  # 7 bars known: train 1-3, embargo 4, val 5-6, embargo 7
    [1, 3, 5, 6, 8, 10]
    >>> split_at(bars, ratios, 1, t + timedelta(days=8), min_bars=2)
    '1 bar after as_of 2008-10-09T20:00:00+00:00: an episode needs 2'
    """
    bars = ts.unique().sort()
    before = bars.filter(bars <= as_of)
    after = bars.filter(bars > as_of)
    if after.len() < max(min_bars, 1):
        return (
            f"{after.len()} bar{'' if after.len() == 1 else 's'} after as_of "
            f"{as_of.isoformat()}: an episode needs {max(min_bars, 1)}"
        )
    usable = before.len() - 2 * embargo
    n_train = int(usable * ratios.train / (ratios.train + ratios.validation))
    n_val = usable - n_train
    if min(n_train, n_val) < max(min_bars, 1):
        return (
            f"{before.len()} bars at or before as_of {as_of.isoformat()} are too few to split "
            f"into train and validation of {max(min_bars, 1)} bars or more, with {embargo} "
            "embargo bars at each boundary"
        )
    val_first = n_train + embargo
    return (
        before[0],
        before[n_train - 1],
        before[val_first],
        before[val_first + n_val - 1],
        after[0],
        after[-1],
    )


def split_sizes(features: pl.DataFrame, selection: pl.DataFrame) -> pl.DataFrame:
    """Ok rows of the selected book options per code and split (the data each split holds)."""
    rows = features.filter(pl.col("iv_status") == "ok").join(
        selection.filter(~pl.col("is_hedge_instrument")),
        on=["weekly_code", "option_symbol"],
    )
    return (
        rows.group_by("weekly_code")
        .agg(
            pl.col("ts").is_between(pl.col(f"{s}_start"), pl.col(f"{s}_end")).sum().alias(s)
            for s in SPLITS
        )
        .sort("weekly_code")
    )


def selection_hash(frame: pl.DataFrame) -> str:
    """Content hash of a selection, independent of row order (its data version)."""
    canonical = frame.sort("weekly_code", "option_symbol").write_csv()
    return hashlib.sha256(canonical.encode()).hexdigest()
