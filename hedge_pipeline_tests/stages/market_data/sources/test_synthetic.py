"""The synthetic source: the book's shape, the validity rules, determinism and market realism."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.quant.pricing import bs_greeks, bs_price
from hedge_pipeline.stages.market_data.sources.synthetic import WEEKLY_CODES, SyntheticSource
from hedge_pipeline.tables.schema import (
    LINEAGE_SCHEMA,
    RAW_COLUMNS,
    RAW_KEY,
    RAW_SCHEMA,
    UnknownWeeklyCodeError,
)

RATE = 0.045
YEAR_US = 365 * 86_400 * 1_000_000
FULL_GRID = 277 * 1500  # every option quoted at every bar of its life


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(seed=7)


@pytest.fixture(scope="module")
def book(source: SyntheticSource) -> pl.DataFrame:
    return pl.concat([source.load(code) for code in WEEKLY_CODES])


@pytest.fixture(scope="module")
def quotes(book: pl.DataFrame) -> pl.DataFrame:
    """The book with mid, half-spread, tau (ACT/365) and ln(K/F) as the pipeline defines them."""
    return book.with_columns(
        mid=(pl.col("bid") + pl.col("ask")) / 2,
        half=(pl.col("ask") - pl.col("bid")) / 2,
        tau=(pl.col("expiry") - pl.col("ts")).dt.total_microseconds() / YEAR_US,
        log_m=(pl.col("strike") / pl.col("underlying_price")).log(),
        is_call=pl.col("option_type") == "C",
    )


def _implied_vol(price, fut, strike, tau, is_call) -> np.ndarray:
    """Black-76 implied vol by bisection: slow but obviously right."""
    lo, hi = np.full_like(price, 1e-4), np.full_like(price, 5.0)
    for _ in range(50):
        vol = 0.5 * (lo + hi)
        rich = bs_price(fut, strike, tau, vol, RATE, is_call=is_call, futures=True) > price
        hi, lo = np.where(rich, vol, hi), np.where(rich, lo, vol)
    return 0.5 * (lo + hi)


@pytest.fixture(scope="module")
def implied(quotes: pl.DataFrame) -> pl.DataFrame:
    """Every 15th bar of the book with the IV of its mid, vega and standardized moneyness."""
    bars = quotes["ts"].unique().sort().gather_every(15)
    sample = quotes.filter(pl.col("ts").is_in(bars.implode()))
    args = [sample[c].to_numpy() for c in ("underlying_price", "strike", "tau", "is_call")]
    iv = _implied_vol(sample["mid"].to_numpy(), *args)
    vega = bs_greeks(args[0], args[1], args[2], iv, RATE, is_call=args[3], futures=True)["vega"]
    return sample.with_columns(iv=iv, vega=vega).with_columns(
        z=pl.col("log_m") / (pl.col("iv") * pl.col("tau").sqrt()),
        iv_spread=2 * pl.col("half") / pl.col("vega"),
    )


def _parquet_sha(df: pl.DataFrame) -> str:
    buffer = io.BytesIO()
    df.write_parquet(buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


# --- contract ------------------------------------------------------------------------------


def test_list_codes_fingerprints_depend_on_seed_and_code_only(source):
    codes = source.list_codes()
    assert tuple(codes) == WEEKLY_CODES
    assert codes == SyntheticSource(seed=7).list_codes()
    assert len(set(codes.values())) == len(codes)
    assert all(int(fp, 16) >= 0 for fp in codes.values())
    other = SyntheticSource(seed=8).list_codes()
    assert all(other[c] != codes[c] for c in codes)
    assert SyntheticSource(codes=["3XN5"]).list_codes() == {"3XN5": codes["3XN5"]}


def test_load_returns_the_canonical_schema_with_lineage_sorted(source):
    df = source.load("3MN5")
    assert df.schema == pl.Schema({**RAW_SCHEMA, **LINEAGE_SCHEMA})
    assert df["source_row"].to_list() == list(range(1, df.height + 1))
    assert df["source_file"].unique().to_list() == ["synthetic://seed=7/3MN5"]
    assert df.equals(df.sort("option_symbol", "ts"))


def test_unknown_codes_are_refused(source):
    with pytest.raises(UnknownWeeklyCodeError, match="3QN5"):
        source.load("3QN5")
    with pytest.raises(UnknownWeeklyCodeError):
        SyntheticSource(codes=["3CN5"]).load("3IN5")
    with pytest.raises(ValueError, match="unknown synthetic codes"):
        SyntheticSource(codes=["3CN5", "NOPE"])
    with pytest.raises(ValueError, match="seed"):
        SyntheticSource(seed=-1)


# --- shape of the book ---------------------------------------------------------------------


def test_book_holds_277_options_with_about_1500_quotes_each(book):
    per_option = book.group_by("weekly_code", "option_symbol", "option_type").len()
    assert per_option.height == 277
    assert per_option["len"].min() >= 1350 and per_option["len"].max() <= 1500
    per_code = per_option.group_by("weekly_code").agg(
        calls=(pl.col("option_type") == "C").sum(), puts=(pl.col("option_type") == "P").sum()
    )
    assert per_code["puts"].to_list() == [17] * 8
    assert sorted(per_code["calls"].to_list()) == [17] * 3 + [18] * 5
    assert 0.92 * FULL_GRID < book.height < FULL_GRID
    assert book["option_symbol"].head(1).item() == "3CN5_C106"


def test_calendar_weekly_expiries_and_five_minute_session_bars(book):
    expiries = book.group_by("weekly_code", maintain_order=True).agg(pl.col("expiry").first())
    exp = expiries["expiry"]
    assert (exp.dt.weekday() == 5).all() and (exp.dt.strftime("%H:%M") == "19:45").all()
    assert exp.diff().drop_nulls().dt.total_days().to_list() == [7] * 7
    ts = book["ts"]
    assert ts.dt.weekday().max() <= 5
    assert ts.dt.strftime("%H:%M").is_between("13:30", "19:40").all()
    assert (ts.dt.minute() % 5 == 0).all() and (ts.dt.second() == 0).all()
    life = book.group_by("weekly_code").agg(
        first=pl.col("ts").min(), last=pl.col("ts").max(), expiry=pl.col("expiry").first()
    )
    assert (life["expiry"] - life["last"]).dt.total_minutes().max() <= 5 * 7  # outages aside
    assert ((life["expiry"] - life["first"]).dt.total_days() == 25).all()


def test_one_underlying_one_path_one_strike_grid(book):
    assert book.select(
        "underlying", "underlying_kind", "rate", "dividend_yield"
    ).unique().rows() == [("FUTN5", "future", 0.045, 0.0)]
    assert (
        book.group_by("ts").agg(pl.col("underlying_price").n_unique())["underlying_price"].max()
        == 1
    )
    assert ((book["strike"] * 2).round(9) % 1 == 0).all()  # a 0.5 strike grid
    start = book.group_by("weekly_code").agg(
        f0=pl.col("underlying_price").sort_by("ts").first(), centre=pl.col("strike").median()
    )
    assert ((start["f0"] - start["centre"]).abs() <= 0.5).all()
    assert book["underlying_price"].min() > 90 and book["underlying_price"].max() < 130


# --- validity (the rules of market_data.validation and the asset checks) ----------------------


def test_every_row_is_a_valid_quote(quotes):
    required = [c for c in RAW_COLUMNS if c not in ("last", "volume", "open_interest")]
    assert quotes.select(pl.col(required).null_count()).row(0) == (0,) * len(required)
    floats = [c for c in required if quotes.schema[c] == pl.Float64]
    assert not quotes.select(pl.any_horizontal(pl.col(floats).is_nan().any())).item()
    assert quotes.filter(
        (pl.col("bid") > pl.col("ask")) | (pl.col("bid") < 0) | (pl.col("ask") <= 0)
    ).is_empty()
    assert quotes.filter(pl.col("ts") > pl.col("expiry")).is_empty()
    assert quotes.select(RAW_KEY).is_unique().all()
    assert quotes["volume"].null_count() == 0 and quotes["open_interest"].null_count() == 0
    assert (quotes["volume"] >= 0).all() and (quotes["open_interest"] > 0).all()


def test_last_trades_inside_the_spread_and_only_when_volume(quotes):
    traded = quotes.filter(pl.col("last").is_not_null())
    assert traded.filter(
        (pl.col("last") < pl.col("bid")) | (pl.col("last") > pl.col("ask"))
    ).is_empty()
    assert (traded["last"] > 0).all() and (traded["volume"] > 0).all()
    assert (quotes.filter(pl.col("last").is_null())["volume"] == 0).all()
    assert 0.1 < traded.height / quotes.height < 0.9


def test_prices_are_on_the_tick(quotes):
    for col in ("bid", "ask", "last"):
        ticks = quotes[col].drop_nulls() * 200
        assert ((ticks - ticks.round(0)).abs() < 1e-9).all()
    cents = quotes["underlying_price"] * 100
    assert ((cents - cents.round(0)).abs() < 1e-9).all()


def test_mids_respect_the_no_arbitrage_bounds(quotes):
    bounded = quotes.with_columns(disc=(-RATE * pl.col("tau")).exp()).with_columns(
        intrinsic=pl.col("disc")
        * pl.when(pl.col("is_call"))
        .then(pl.col("underlying_price") - pl.col("strike"))
        .otherwise(pl.col("strike") - pl.col("underlying_price"))
        .clip(lower_bound=0.0),
        upper=pl.col("disc")
        * pl.when(pl.col("is_call")).then("underlying_price").otherwise("strike"),
    )
    assert bounded.filter(pl.col("mid") < pl.col("intrinsic")).is_empty()
    assert bounded.filter(pl.col("mid") > pl.col("upper")).is_empty()


def test_mids_are_monotone_in_strike_within_the_spread(quotes):
    """At each bar, call mids fall and put mids rise with the strike, up to the half-spreads."""
    ladder = quotes.sort("weekly_code", "option_type", "ts", "strike").with_columns(
        next_mid=pl.col("mid").shift(-1).over("weekly_code", "option_type", "ts"),
        next_half=pl.col("half").shift(-1).over("weekly_code", "option_type", "ts"),
    )
    slack = pl.col("half") + pl.col("next_half") + 1e-9
    calls_rise = pl.col("is_call") & (pl.col("next_mid") > pl.col("mid") + slack)
    puts_fall = ~pl.col("is_call") & (pl.col("next_mid") < pl.col("mid") - slack)
    assert ladder.filter(calls_rise | puts_fall).is_empty()


def test_open_interest_is_daily_and_slowly_varying(quotes):
    daily = quotes.group_by("option_symbol", pl.col("ts").dt.date().alias("day")).agg(
        pl.col("open_interest").n_unique().alias("values"), pl.col("open_interest").first()
    )
    assert daily["values"].max() == 1
    change = daily.sort("option_symbol", "day").select(
        (pl.col("open_interest").log().diff().over("option_symbol")).abs().drop_nulls()
    )
    assert change.max().item() < 0.3


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(book):
    again = pl.concat([SyntheticSource(seed=7).load(code) for code in WEEKLY_CODES])
    assert _parquet_sha(again) == _parquet_sha(book)
    assert _parquet_sha(SyntheticSource(seed=8).load("3CN5")) != _parquet_sha(
        book.filter(pl.col("weekly_code") == "3CN5")
    )


@pytest.mark.parametrize("code", ["3CN5", "3XN5", "3SN5"])
def test_one_code_alone_equals_its_slice_of_the_full_book(book, code):
    alone = SyntheticSource(seed=7, codes=[code]).load(code)
    assert alone.equals(book.filter(pl.col("weekly_code") == code))


def test_same_bytes_in_another_process(source):
    script = (
        "import hashlib, io\n"
        "from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource\n"
        "buf = io.BytesIO()\n"
        "SyntheticSource(seed=7, codes=['3YN5']).load('3YN5').write_parquet(buf)\n"
        "print(hashlib.sha256(buf.getvalue()).hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _parquet_sha(source.load("3YN5"))


# --- realism -------------------------------------------------------------------------------


def test_spreads_widen_away_from_the_money_and_near_expiry(implied):
    live = implied.filter(pl.col("tau") > 5 / 365, pl.col("vega") > 0.05)
    atm = live.filter(pl.col("z").abs() < 0.5)["iv_spread"].median()
    wing = live.filter(pl.col("z").abs().is_between(1.5, 3.0))["iv_spread"].median()
    assert wing > 1.3 * atm
    near_money = implied.filter(pl.col("z").abs() < 0.5, pl.col("vega") > 0.01)
    last_day = near_money.filter(pl.col("tau") < 1 / 365)
    early = near_money.filter(pl.col("tau") > 10 / 365)
    assert last_day["iv_spread"].median() > 1.5 * early["iv_spread"].median()
    relative = (pl.col("half") / pl.col("mid")).median()
    assert last_day.select(relative).item() > early.select(relative).item()


def test_quotes_carry_a_negative_skew_with_curvature(implied):
    """Per bar, a quadratic fit of OTM IVs in ln(K/F): puts above equidistant calls."""
    otm = implied.filter(
        pl.col("tau") > 5 / 365,
        pl.col("is_call") == (pl.col("log_m") > 0),
        pl.col("mid") > 0.05,
        pl.col("log_m").abs() < 0.05,
    )
    fits = [
        np.polyfit(g["log_m"].to_numpy(), g["iv"].to_numpy(), 2)
        for _, g in otm.group_by("weekly_code", "ts")
        if g.height >= 8
    ]
    curvature, slope, _ = np.median(fits, axis=0)
    assert len(fits) > 100 and slope < 0 and curvature > 0
    put_above_call = [np.polyval(f, -0.02) > np.polyval(f, 0.02) for f in fits]
    assert np.mean(put_above_call) > 0.9


def test_volatility_is_stochastic_and_leveraged(source, implied):
    market = source.market
    day = market.ts.astype("datetime64[D]")
    log_f = np.log(market.futures)
    intraday = day[1:] == day[:-1]
    returns = pl.DataFrame({"day": day[1:][intraday], "r": np.diff(log_f)[intraday]})
    daily_rv = returns.group_by("day").agg((pl.col("r") ** 2).sum()).sort("day")["r"].to_numpy()
    log_rv = np.log(daily_rv)
    assert np.corrcoef(log_rv[1:], log_rv[:-1])[0, 1] > 0.3  # vol clusters: it is a state
    assert np.corrcoef(np.diff(log_f), np.diff(market.variance))[0, 1] < -0.3  # leverage
    # The quotes follow the variance: near-the-money IVs track √v across the span.
    atm = implied.filter(pl.col("z").abs() < 0.3, pl.col("tau") > 3 / 365)
    level = atm.group_by("ts").agg(pl.col("iv").median()).sort("ts")
    index = np.searchsorted(market.ts, level["ts"].dt.replace_time_zone(None).to_numpy())
    assert np.corrcoef(level["iv"].to_numpy(), np.sqrt(market.variance[index]))[0, 1] > 0.8


def test_gaps_missing_quotes_more_in_the_wings_and_market_outages(book, source):
    missing = 1 - book.height / FULL_GRID
    assert 0.01 < missing < 0.08
    # Whole-market outages: bars at which no option of any code was quoted.
    market = source.market
    quoted = np.isin(market.ts, book["ts"].dt.replace_time_zone(None).to_numpy())
    assert np.array_equal(~quoted, market.outage)
    assert 5 <= market.outage.sum() <= 150
    # Illiquid wings: the options far from the money at a bar are the ones more often missing.
    grid = (
        book.select("weekly_code", "option_symbol", "strike")
        .unique()
        .join(
            book.select("weekly_code", "ts", "underlying_price", "expiry").unique(),
            on="weekly_code",
        )
    )
    full = grid.join(book.select(*RAW_KEY, "bid"), on=RAW_KEY, how="left").with_columns(
        z=(pl.col("strike") / pl.col("underlying_price")).log().abs()
        / (0.22 * ((pl.col("expiry") - pl.col("ts")).dt.total_microseconds() / YEAR_US).sqrt())
    )
    rate = full.group_by(pl.col("z") > 3).agg(pl.col("bid").is_null().mean()).sort("z")["bid"]
    assert rate[1] > 2 * rate[0]
