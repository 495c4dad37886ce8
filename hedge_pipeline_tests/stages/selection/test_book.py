"""Selection rules on a small synthetic book whose answer can be worked out by hand.

Two weekly codes, nine strikes (90 to 110 by 2.5), a call and a put at each, 200 five-minute
bars each, AAA then BBB (no calendar overlap). AAA's forward is 100, BBB's 104, so the
strikes nearest the money differ per code. Volume and vega peak at the money, spreads widen
away from it; calls trade a little more, puts are a little tighter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedge_pipeline.stages.selection.book import (
    BOUNDARY_COLUMNS,
    SELECTION_SCHEMA,
    SelectionError,
    active_codes,
    latest_bar,
    option_stats,
    parse_as_of,
    select_portfolio,
    selection_hash,
    split_bars,
    split_sizes,
)
from hedge_pipeline.stages.selection.templates import PortfolioTemplate, SplitRatios

STRIKES = [90.0 + 2.5 * i for i in range(9)]
FORWARDS = {"AAA": 100.0, "BBB": 104.0}
BARS = 200
START = datetime(2025, 1, 6, 14, 30, tzinfo=UTC)


def make_features(bars: int = BARS) -> pl.DataFrame:
    frames = []
    for i, (code, forward) in enumerate(FORWARDS.items()):
        first = START + timedelta(minutes=5 * bars * i)
        ts = pl.datetime_range(
            first, first + timedelta(minutes=5 * (bars - 1)), "5m", time_zone="UTC", eager=True
        )
        options = pl.DataFrame(
            [(k, t) for k in STRIKES for t in "CP"], schema=["strike", "option_type"], orient="row"
        )
        frames.append(
            options.join(pl.DataFrame({"ts": ts}), how="cross").with_columns(
                weekly_code=pl.lit(code),
                forward=pl.lit(forward),
                iv_status=pl.lit("ok"),
            )
        )
    dist = (pl.col("strike") - pl.col("forward")).abs()
    is_call = pl.col("option_type") == "C"
    return (
        pl.concat(frames)
        .with_columns(
            option_symbol=pl.format("{}_{}{}", "weekly_code", "option_type", "strike"),
            volume=(100 - 8 * dist + pl.when(is_call).then(3).otherwise(0)).cast(pl.Int64),
            open_interest=(5000 - 100 * dist).cast(pl.Int64),
            spread=0.05 + 0.01 * dist - pl.when(is_call).then(0.0).otherwise(0.005),
            vega=20.0 * (-((dist / 10.0) ** 2)).exp(),
        )
        .sample(fraction=1.0, shuffle=True, seed=1)  # the rules must not rely on row order
    )


FEATURES = make_features()


def template(**changes: Any) -> PortfolioTemplate:
    """An atm_book-like template; ``changes`` set fields, dotted names reach nested ones."""
    data: dict[str, Any] = {
        "name": "test_book",
        "description": "test",
        "selection_criteria": {
            "option_type": "both",
            "strike_range": [20, 80],
            "min_data_size": 50,
            "sort_by": "atm_distance",
        },
        "max_options": 4,
        "position_weights": "equal",
        "time_series_params": {"embargo_bars": 12},
    }
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return PortfolioTemplate.model_validate(data)


def symbols(frame: pl.DataFrame, code: str, hedge: bool = False) -> list[str]:
    rows = frame.filter((pl.col("weekly_code") == code) & (pl.col("is_hedge_instrument") == hedge))
    return rows["option_symbol"].to_list()


def test_atm_book_takes_call_and_put_at_the_two_strikes_nearest_each_codes_forward():
    selection = select_portfolio(FEATURES, template())
    frame = selection.frame
    assert frame.schema == pl.Schema(SELECTION_SCHEMA)
    assert symbols(frame, "AAA") == ["AAA_C100.0", "AAA_P100.0", "AAA_C102.5", "AAA_P102.5"]
    assert symbols(frame, "BBB") == ["BBB_C105.0", "BBB_P105.0", "BBB_C102.5", "BBB_P102.5"]
    assert frame["weight"].to_list() == [1.0] * 8
    assert frame["rows"].to_list() == [BARS] * 8
    assert set(frame["template"]) == {"test_book"}
    assert selection.skipped == {}


def test_percentile_band_is_linear_percentiles_of_each_codes_moneyness():
    lo, hi = 20.0, 45.0
    frame = select_portfolio(
        FEATURES, template(selection_criteria__strike_range=[lo, hi], max_options=18)
    ).frame
    for code, forward in FORWARDS.items():
        moneyness = np.log(np.repeat(STRIKES, 2) / forward)
        q_lo, q_hi = np.percentile(moneyness, [lo, hi])
        expected = {k for k in STRIKES if q_lo <= np.log(k / forward) <= q_hi}
        got = frame.filter(pl.col("weekly_code") == code)
        assert set(got["strike"]) == expected
        assert got.height == 2 * len(expected)  # a call and a put at every strike


@pytest.mark.parametrize(
    ("changes", "aaa"),
    [
        ({"selection_criteria__option_type": "C"}, ["C100.0", "C102.5", "C97.5"]),
        ({"selection_criteria__option_type": "P"}, ["P100.0", "P102.5", "P97.5"]),
        ({"selection_criteria__sort_by": "volume"}, ["C100.0", "P100.0", "C102.5"]),
        ({"selection_criteria__sort_by": "spread"}, ["P100.0", "C100.0", "P102.5"]),
        ({"selection_criteria__sort_by": "open_interest"}, ["C100.0", "P100.0", "C102.5"]),
    ],
)
def test_option_type_and_sort_keys_rank_with_atm_then_symbol_tie_breaks(changes, aaa):
    frame = select_portfolio(FEATURES, template(max_options=3, **changes)).frame
    assert symbols(frame, "AAA") == [f"AAA_{s}" for s in aaa]


def test_min_data_size_counts_only_ok_rows():
    sparse = FEATURES.with_columns(
        iv_status=pl.when((pl.col("option_symbol") == "AAA_C100.0") & (pl.col("ts") > START))
        .then(pl.lit("below_intrinsic"))
        .otherwise(pl.col("iv_status"))
    )
    frame = select_portfolio(sparse, template(selection_criteria__min_data_size=2)).frame
    assert "AAA_C100.0" not in symbols(frame, "AAA")
    kept = select_portfolio(sparse, template(selection_criteria__min_data_size=1)).frame
    assert kept.filter(pl.col("option_symbol") == "AAA_C100.0")["rows"].item() == 1


def test_vega_weights_give_every_option_the_same_vega_and_average_one():
    frame = select_portfolio(FEATURES, template(position_weights="vega")).frame
    vega = option_stats(FEATURES).select("option_symbol", "vega")
    exposure = frame.join(vega, on="option_symbol").with_columns(
        x=pl.col("weight") * pl.col("vega")
    )
    for _, book in exposure.group_by("weekly_code"):
        assert book["weight"].mean() == pytest.approx(1.0)
        assert book["x"].to_numpy() == pytest.approx(book["x"][0])
    assert frame.filter(pl.col("option_symbol") == "AAA_C102.5")["weight"].item() > 1.0


def test_explicit_weights_follow_the_rank_order():
    frame = select_portfolio(FEATURES, template(position_weights=[4, 3, 2, 1])).frame
    assert frame.filter(pl.col("weekly_code") == "AAA")["weight"].to_list() == [4, 3, 2, 1]
    short = select_portfolio(
        FEATURES,
        template(selection_criteria__strike_range=[45, 55], position_weights=[4, 3, 2, 1]),
    ).frame
    assert short.filter(pl.col("weekly_code") == "AAA")["weight"].to_list() == [4, 3]


def test_hedge_option_is_the_most_traded_near_the_money_option_outside_the_book():
    frame = select_portfolio(
        FEATURES, template(max_options=2, hedge_option={"strike_range": [25, 75]})
    ).frame
    assert symbols(frame, "AAA") == ["AAA_C100.0", "AAA_P100.0"]
    assert symbols(frame, "AAA", hedge=True) == ["AAA_C102.5"]  # most volume after the book
    assert symbols(frame, "BBB", hedge=True) == ["BBB_C102.5"]
    hedges = frame.filter(pl.col("is_hedge_instrument"))
    assert hedges["weight"].to_list() == [0.0, 0.0]


def test_hedge_option_needs_a_candidate_the_book_is_not_short():
    narrow = {"strike_range": [45, 55]}  # AAA: only the 100 strike, which the book holds
    with pytest.raises(SelectionError, match="AAA: no hedge option outside the book"):
        select_portfolio(
            FEATURES,
            template(max_options=2, hedge_option=narrow, selection_criteria__weekly_codes=["AAA"]),
        )


def test_unknown_weekly_code_is_named_with_the_known_ones():
    with pytest.raises(SelectionError) as raised:
        select_portfolio(FEATURES, template(selection_criteria__weekly_codes=["AAA", "ZZZ"]))
    assert "weekly code 'ZZZ'" in str(raised.value)
    assert "known: AAA, BBB" in str(raised.value)


def test_named_codes_restrict_the_book():
    frame = select_portfolio(FEATURES, template(selection_criteria__weekly_codes=["BBB"])).frame
    assert set(frame["weekly_code"]) == {"BBB"}


def test_nothing_matching_is_an_error_that_says_which_filter_emptied_the_book():
    with pytest.raises(SelectionError) as raised:
        select_portfolio(FEATURES, template(selection_criteria__min_data_size=BARS + 1))
    message = str(raised.value)
    assert "AAA: no option matches (18 options" in message
    assert f"0 with >= {BARS + 1} ok rows" in message
    with pytest.raises(SelectionError, match="holds no rows"):
        select_portfolio(FEATURES.clear(), template())


def test_all_codes_skips_a_code_nothing_matches_but_a_named_code_must_match():
    bbb_end = START + timedelta(minutes=5 * (BARS + 50))  # BBB keeps its first 50 bars
    thin = FEATURES.filter((pl.col("weekly_code") == "AAA") | (pl.col("ts") < bbb_end))
    selection = select_portfolio(thin, template(selection_criteria__min_data_size=100))
    assert set(selection.frame["weekly_code"]) == {"AAA"}
    assert "no option matches" in selection.skipped["BBB"]
    with pytest.raises(SelectionError, match="BBB: no option matches"):
        select_portfolio(
            thin,
            template(
                selection_criteria__min_data_size=100,
                selection_criteria__weekly_codes=["AAA", "BBB"],
            ),
        )


def test_per_code_splits_cut_each_codes_life_and_global_cuts_the_union():
    per_code = select_portfolio(FEATURES, template()).frame
    bounds = per_code.unique("weekly_code").sort("weekly_code")
    first_bbb = START + timedelta(minutes=5 * BARS)
    assert bounds["train_start"].to_list() == [START, first_bbb]
    assert bounds["test_end"].to_list() == [
        START + timedelta(minutes=5 * (BARS - 1)),
        first_bbb + timedelta(minutes=5 * (BARS - 1)),
    ]
    glob = select_portfolio(FEATURES, template(time_series_params__split_mode="global")).frame
    assert glob.select(BOUNDARY_COLUMNS).unique().height == 1
    assert glob["train_start"][0] == START
    assert glob["test_end"][0] == first_bbb + timedelta(minutes=5 * (BARS - 1))
    # AAA lives in the first half of the union: all of it is training data.
    sizes = split_sizes(FEATURES, glob).filter(pl.col("weekly_code") == "AAA")
    assert sizes.select("val", "test").row(0) == (0, 0)


def test_the_as_of_split_tests_after_as_of_and_chooses_from_what_was_known():
    """A walk-forward of the lineage: AAA's bars up to as_of are train and validation (their
    ratio, an embargo after each), every later bar is test; BBB, listed after as_of, gets no
    book; and nothing after as_of (prices, volumes, rows) moves the options or the train and
    validation boundaries."""
    as_of = START + timedelta(minutes=5 * 149)  # AAA's 150th bar
    wf = template(time_series_params__split_mode="as_of", selection_criteria__min_data_size=1)
    selection = select_portfolio(FEATURES, wf, as_of)
    bounds = selection.frame.unique("weekly_code")
    assert bounds["weekly_code"].to_list() == ["AAA"]
    assert "BBB" in selection.skipped
    usable = 150 - 2 * 12
    n_train = int(usable * 0.70 / 0.85)
    bar = [START + timedelta(minutes=5 * i) for i in range(BARS)]
    assert bounds.select(BOUNDARY_COLUMNS).row(0) == (
        bar[0], bar[n_train - 1], bar[n_train + 12], bar[149 - 12], bar[150], bar[-1]
    )  # fmt: skip
    after = pl.col("ts") > as_of
    moved = FEATURES.with_columns(
        volume=pl.when(after & (pl.col("strike") == 90.0)).then(10_000).otherwise("volume"),
        forward=pl.when(after).then(pl.col("forward") * 1.2).otherwise("forward"),
    )
    by_volume = wf.model_copy(
        update={
            "selection_criteria": wf.selection_criteria.model_copy(update={"sort_by": "volume"})
        }
    )
    for changed in (moved, moved.filter(~after | (pl.col("strike") > 95.0))):
        for tpl in (wf, by_volume):
            again = select_portfolio(changed, tpl, as_of).frame
            base = select_portfolio(FEATURES, tpl, as_of).frame
            assert again.equals(base)


def test_the_as_of_split_needs_an_as_of_and_room_for_an_episode_in_each_split():
    wf = template(time_series_params__split_mode="as_of", selection_criteria__min_data_size=1)
    with pytest.raises(SelectionError, match="split_mode 'as_of' needs the selection's as_of"):
        select_portfolio(FEATURES, wf)
    last = START + timedelta(minutes=5 * (BARS - 2))  # AAA's last bar but one
    long = template(
        time_series_params__split_mode="as_of",
        selection_criteria__min_data_size=1,
        selection_criteria__weekly_codes=["AAA"],
        training_params__n_steps=3,
        training_params__rebalance_bars=2,
    )
    with pytest.raises(SelectionError, match=r"1 bar after as_of .*: an episode needs 7"):
        select_portfolio(FEATURES, long, last)
    early = START + timedelta(minutes=5 * 30)  # 31 bars: 7 usable, too few for 7 and 7
    with pytest.raises(SelectionError, match="31 bars at or before as_of"):
        select_portfolio(FEATURES, long, early)


def test_split_sizes_count_ok_rows_of_the_book_per_split():
    frame = select_portfolio(FEATURES, template()).frame
    sizes = split_sizes(FEATURES, frame).filter(pl.col("weekly_code") == "AAA").row(0, named=True)
    usable = BARS - 2 * 12
    assert sizes == {
        "weekly_code": "AAA",
        "train": 4 * int(usable * 0.7),
        "val": 4 * int(usable * 0.15),
        "test": 4 * (usable - int(usable * 0.7) - int(usable * 0.15)),
    }


def test_a_code_too_short_to_split_is_skipped_or_named():
    short = make_features(bars=20)  # 20 bars cannot hold 2 x 12 embargo bars
    with pytest.raises(SelectionError, match="20 bars are too few to split"):
        select_portfolio(short, template(selection_criteria__min_data_size=1))


def test_selection_and_its_hash_do_not_depend_on_row_order():
    a = select_portfolio(FEATURES, template()).frame
    b = select_portfolio(FEATURES.sample(fraction=1.0, shuffle=True, seed=2), template()).frame
    assert a.equals(b)
    assert selection_hash(a) == selection_hash(b.reverse())
    assert selection_hash(a) != selection_hash(a.with_columns(weight=pl.col("weight") * 2))


# --- properties --------------------------------------------------------------------------

ratios = (
    st.tuples(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20))
    .map(lambda w: [x / sum(w) for x in w])
    .map(lambda r: SplitRatios(train=r[0], validation=r[1], test=1.0 - r[0] - r[1]))
)


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 10_000), min_size=1, max_size=300, unique=True),
    ratios=ratios,
    embargo=st.integers(0, 30),
)
def test_splits_are_ordered_disjoint_and_separated_by_the_embargo(offsets, ratios, embargo):
    bars = pl.Series([START + timedelta(minutes=5 * o) for o in offsets]).sort()
    cut = split_bars(bars, ratios, embargo)
    if isinstance(cut, str):
        # Only a split some part of which would get less than one bar may fail.
        usable = len(offsets) - 2 * embargo
        assert usable * min(ratios.train, ratios.validation, ratios.test) < 1
        return
    train_start, train_end, val_start, val_end, test_start, test_end = cut
    assert train_start == bars[0] and test_end == bars[-1]
    assert train_start <= train_end < val_start <= val_end < test_start <= test_end
    assert bars.is_between(train_end, val_start, closed="none").sum() == embargo
    assert bars.is_between(val_end, test_start, closed="none").sum() == embargo


@settings(max_examples=40, deadline=None)
@given(
    max_options=st.integers(1, 8),
    option_type=st.sampled_from(["C", "P", "both"]),
    band=st.tuples(st.integers(0, 100), st.integers(0, 100)).filter(lambda b: b[0] < b[1]),
    sort_by=st.sampled_from(["volume", "open_interest", "atm_distance", "spread"]),
    weights=st.sampled_from(["equal", "vega", "list"]),
)
def test_any_valid_template_gives_non_negative_weights_and_at_most_max_options(
    max_options, option_type, band, sort_by, weights
):
    spec = [float(i + 1) for i in range(max_options)] if weights == "list" else weights
    tpl = template(
        max_options=max_options,
        position_weights=spec,
        selection_criteria__option_type=option_type,
        selection_criteria__strike_range=list(band),
        selection_criteria__sort_by=sort_by,
    )
    stats = option_stats(FEATURES)
    try:
        frame = select_portfolio(FEATURES, tpl).frame
    except SelectionError:
        frame = pl.DataFrame(schema=SELECTION_SCHEMA)
    for code in FORWARDS:
        options = stats.filter(pl.col("weekly_code") == code)
        q_lo, q_hi = np.percentile(options["moneyness"].to_numpy(), band)
        candidates = sum(
            q_lo <= m <= q_hi and option_type in ("both", t)
            for m, t in options.select("moneyness", "option_type").iter_rows()
        )
        book = frame.filter(pl.col("weekly_code") == code)
        assert book.height == min(max_options, candidates)
        assert (book["weight"] >= 0).all() and (book.is_empty() or book["weight"].sum() > 0)
        assert book.select(BOUNDARY_COLUMNS).unique().height <= 1
        if not book.is_empty():
            row = book.row(0, named=True)
            assert (
                row["train_start"]
                <= row["train_end"]
                < row["val_start"]
                <= row["val_end"]
                < row["test_start"]
                <= row["test_end"]
            )


def _lifetimes(**spans: tuple[datetime, ...]) -> pl.DataFrame:
    """first quote, last quote and expiry (the last quote's time unless given)."""
    return pl.DataFrame(
        {
            "weekly_code": list(spans),
            "first_ts": [span[0] for span in spans.values()],
            "last_ts": [span[1] for span in spans.values()],
            "expiry": [span[-1] for span in spans.values()],
        },
        schema={
            "weekly_code": pl.String(),
            "first_ts": pl.Datetime("us", "UTC"),
            "last_ts": pl.Datetime("us", "UTC"),
            "expiry": pl.Datetime("us", "UTC"),
        },
    )


def test_a_code_is_active_from_its_first_quote_until_before_its_last():
    day = timedelta(days=1)
    lifetimes = _lifetimes(
        OLD=(START - 30 * day, START - day),  # expired before
        ENDS=(START - 28 * day, START),  # its last quote (expiry) is as_of: gone
        LIVE=(START - 14 * day, START + 14 * day),
        NEW=(START, START + 28 * day),  # listed at as_of: alive
        LATER=(START + day, START + 29 * day),  # not listed yet
        STOPPED=(START - 14 * day, START - day, START + 14 * day),  # quotes ended early
    )
    assert active_codes(lifetimes, START) == ["LIVE", "NEW"]
    assert active_codes(lifetimes, START - timedelta(microseconds=1)) == ["ENDS", "LIVE"]
    assert active_codes(lifetimes, START + 40 * day) == []


def test_at_the_latest_bar_the_codes_not_yet_expired_are_active():
    """The data ends at the latest bar, not the codes: every code quoted there that expires
    later is held; one expiring at that bar is not (``as_of: latest``)."""
    day = timedelta(days=1)
    end = START + 10 * day
    lifetimes = _lifetimes(
        HELD=(START, end, end + 7 * day),
        ALSO=(START + day, end, end + 21 * day),
        EXPIRES=(START - 18 * day, end, end),
        STOPPED=(START, end - day, end + 3 * day),
    )
    latest = latest_bar(lifetimes)
    assert latest == end
    assert active_codes(lifetimes, parse_as_of("latest", latest)) == ["ALSO", "HELD"]
    with pytest.raises(SelectionError, match="no bar yet"):
        parse_as_of("latest", latest_bar(lifetimes.clear()))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2008-10-10", datetime(2008, 10, 10, 23, 59, 59, 999999, tzinfo=UTC)),  # end of day
        ("2008-10-10T20:00:00", datetime(2008, 10, 10, 20, tzinfo=UTC)),  # naive is UTC
        ("2008-10-10T20:00:00Z", datetime(2008, 10, 10, 20, tzinfo=UTC)),
        ("2008-10-10T16:00:00-04:00", datetime(2008, 10, 10, 20, tzinfo=UTC)),
    ],
)
def test_as_of_is_an_iso_date_or_time_in_utc(text, expected):
    assert parse_as_of(text) == expected


def test_an_unreadable_as_of_says_what_it_expects():
    with pytest.raises(SelectionError, match="'10/10/2008' is not an ISO date"):
        parse_as_of("10/10/2008")
