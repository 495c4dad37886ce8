"""The history source: its codes, valid books, same bytes, no look-ahead, files and their errors."""

from __future__ import annotations

import hashlib
import io
import itertools
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.orchestration.resources import ChainSourceResource
from hedge_pipeline.stages.market_data import quality
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources import history as hs
from hedge_pipeline.stages.market_data.sources.history import HistorySource
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import (
    LINEAGE_COLUMNS,
    LINEAGE_SCHEMA,
    RAW_COLUMNS,
    RAW_SCHEMA,
    ChainDataError,
    UnknownWeeklyCodeError,
)
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code

CRASH = "SP500-2008-10-17"  # listed 2008-09-19, four weeks before: Lehman to the October lows
VIX_ERA = "SP500-2016-01-15"  # the ATM level comes from the VIX


@pytest.fixture(scope="module")
def sp500() -> HistorySource:
    return HistorySource("sp500")


def _sha(frame: pl.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def _fridays(codes: list[str], symbol: str) -> list[date]:
    prefix = f"{symbol}-"
    assert all(c.startswith(prefix) for c in codes)
    return [date.fromisoformat(c.removeprefix(prefix)) for c in codes]


@pytest.mark.parametrize(
    ("name", "count", "first"),
    [("sp500", 1039, date(1999, 3, 5)), ("nasdaq", 1039, date(1999, 3, 5)),
     ("wti", 1718, date(1986, 2, 28))],
)  # fmt: skip
def test_embedded_series_list_a_thousand_weekly_codes(name: str, count: int, first: date) -> None:
    source = HistorySource(name)
    codes = list(source.list_codes())
    fridays = _fridays(codes, name.upper())
    assert len(codes) == count  # one per week to 2019-01-25, the last alive at the data's end
    assert (fridays[0], fridays[-1]) == (first, date(2019, 1, 25))
    assert all(d.weekday() == 4 for d in fridays)
    assert all((b - a).days == 7 for a, b in itertools.pairwise(fridays))


def test_embedded_series_are_archs_own(sp500: HistorySource) -> None:
    from arch.data import sp500 as arch_sp500
    from arch.data import vix as arch_vix

    prices, vix = arch_sp500.load(), arch_vix.load()["vix"]
    history = sp500.history
    assert np.array_equal(history.close, prices["Close"].to_numpy())
    assert history.row.tolist() == list(range(1, len(prices) + 1))
    # The VIX in decimals is the S&P 500's iv from its first day on; none before.
    dates = history.ts.astype("datetime64[us]").astype("datetime64[D]")
    first_vix = np.datetime64(vix.index[0].date())
    assert np.isnan(history.iv[dates < first_vix]).all()
    on = vix.reindex(prices.index[dates >= first_vix]).to_numpy()
    # (to the last bit but one: pandas' default CSV float parsing is not correctly rounded)
    np.testing.assert_allclose(history.iv[dates >= first_vix], on / 100.0, rtol=1e-15, atol=0)


def test_wti_is_archs_spot_close_on_the_days_it_has_one() -> None:
    from arch.data import wti as arch_wti

    spot = arch_wti.load()["DCOILWTICO"].dropna()
    history = HistorySource("wti").history
    np.testing.assert_allclose(history.close, spot.to_numpy(), rtol=1e-15, atol=0)
    assert np.isnan(history.iv).all()
    dates = history.ts.astype("datetime64[us]").astype("datetime64[D]")
    assert (dates == spot.index.to_numpy().astype("datetime64[D]")).all()


def test_a_code_is_a_valid_book_on_the_real_prices(sp500: HistorySource) -> None:
    frame = sp500.load(CRASH)
    assert frame.schema == pl.Schema(RAW_SCHEMA | LINEAGE_SCHEMA)
    assert frame["option_symbol"].n_unique() == 18  # 9 strikes, a put and a call at each
    bars = frame["ts"].unique().sort()
    assert bars.len() == 21  # the listing Friday's close and 20 trading days
    # Daily bars and the expiry sit at the New York close (EDT in September/October: 20:00 UTC).
    assert bars[0] == datetime(2008, 9, 19, 20, tzinfo=UTC)
    assert bars[-1] == frame["expiry"][0] == datetime(2008, 10, 17, 20, tzinfo=UTC)
    closes = frame.group_by("ts").agg(pl.col("underlying_price").first()).sort("ts")
    assert closes["underlying_price"].to_list() == [
        float(c) for c in sp500.history.close[frame["source_row"].min() - 1 :][:21]
    ]
    assert set(frame["underlying"]) == {"SP500"} and set(frame["underlying_kind"]) == {"equity"}

    result = validate_chain(frame, "reject")
    assert result.quarantined.is_empty() and result.valid.height == frame.height == 18 * 21
    [arbitrage] = quality.static_no_arbitrage(result.valid, 0.0).values()
    assert (
        arbitrage.metadata["bound_violations"] == arbitrage.metadata["monotonicity_violations"] == 0
    )
    features = compute_features(result.valid)
    [solved] = quality.iv_solve_rates(features, 0.99).values()
    assert solved.passed


def test_the_vix_is_the_atm_level_where_it_exists(sp500: HistorySource) -> None:
    history, vol = sp500.history, sp500.vol
    bars = np.flatnonzero(np.isfinite(history.iv))
    assert bars.size == 1257
    tenor = np.full(bars.size, hs.IV_TENOR)
    np.testing.assert_allclose(vol.atm(bars, tenor), history.iv[bars], rtol=1e-12)
    # Before 2014 the level is the causal model's: high after Lehman, low in the 2006 calm.
    crash = np.searchsorted(history.ts, sp500._codes[CRASH].expiry_us) - 1
    calm = np.searchsorted(history.ts, sp500._codes["SP500-2006-11-17"].expiry_us) - 1
    high, low = vol.atm(np.array([crash, calm]), np.array([hs.IV_TENOR] * 2))
    assert high > 0.5 > 0.15 > low


def test_fit_garch_agrees_with_arch(sp500: HistorySource) -> None:
    """The variance-targeted quick fit lands where arch's full GARCH(1,1) fit does."""
    from arch import arch_model

    returns = 100.0 * np.diff(np.log(sp500.history.close))
    for n in (1000, returns.size):
        alpha, beta = hs.fit_garch(returns[:n])
        full = arch_model(returns[:n], mean="Zero", vol="GARCH", p=1, q=1, rescale=False)
        params = full.fit(disp="off").params
        assert abs(alpha - params["alpha[1]"]) < 0.01
        assert abs(beta - params["beta[1]"]) < 0.01


def test_same_history_same_bytes(sp500: HistorySource) -> None:
    first = {code: _sha(sp500.load(code)) for code in (CRASH, VIX_ERA)}
    hs._VOL_CACHE.clear()  # the vol path is computed again, not reused
    again = HistorySource("sp500")
    assert {code: _sha(again.load(code)) for code in (CRASH, VIX_ERA)} == first
    assert again.list_codes() == sp500.list_codes()
    # Codes draw their noise from their own names: two codes never share a stream.
    a, b = (sp500.load(c) for c in (CRASH, "SP500-2008-10-24"))
    assert a["bid"].head(18).to_list() != b["bid"].head(18).to_list()


def _embedded_table(name: str) -> pl.DataFrame:
    return hs._embedded(name)


@pytest.mark.parametrize("cut", ["2008-10-21", "2016-02-02"])
def test_no_look_ahead_a_cut_history_gives_the_same_expired_codes(
    cut: str, sp500: HistorySource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history cut at ``cut`` and uncut: identical rows, and identical greeks_features,
    for every code expired before it."""
    path = tmp_path / "sp500_cut.csv"
    day = date.fromisoformat(cut)
    _embedded_table("sp500").filter(pl.col("date") < day).write_csv(path)
    monkeypatch.setenv("HEDGE_SOURCE", "history")
    monkeypatch.setenv("HEDGE_HISTORY", str(path))
    monkeypatch.setenv("HEDGE_HISTORY_SYMBOL", "SP500")
    cut_source = ChainSourceResource.from_env().build()

    full, short = sp500.list_codes(), cut_source.list_codes()
    expired = [c for c in full if date.fromisoformat(c.removeprefix("SP500-")) < day]
    assert [c for c in short if c in expired] == expired
    for code in expired:  # every fingerprint: they hash the history up to the code's last bar
        assert short[code] == full[code], code
    # Rows: the codes nearest the cut (the ones most at risk) and a sample of the others.
    for code in expired[::50] + expired[-6:]:
        assert cut_source.load(code).equals(
            sp500.load(code).with_columns(pl.lit(str(path)).alias("source_file"))
        ), code
    for code in expired[-6:]:  # and what the pipeline computes from them
        ours, theirs = (
            compute_features(source.load(code).drop("source_file"))
            for source in (cut_source, sp500)
        )
        assert ours.equals(theirs), code
    # The code alive across the cut is quoted only up to it: the cut did bite.
    alive = next(c for c in short if c not in expired)
    assert cut_source.load(alive).height < sp500.load(alive).height


def _write_descending_csv(table: pl.DataFrame, path: Path) -> None:
    """As many exports come: newest first, headers with odd case and spaces, extra columns."""
    table.sort("date", descending=True).select(
        pl.col("date").alias(" Date "),
        pl.col("open").alias("OPEN"),
        pl.col("high").alias("High "),
        pl.col("low").alias(" low"),
        pl.col("close").alias("Close"),
        pl.lit(1000).alias("Volume"),
    ).write_csv(path)


def test_a_csv_written_from_another_series_loads(tmp_path: Path) -> None:
    nasdaq = HistorySource("nasdaq")
    path = tmp_path / "nasdaq composite.csv"
    _write_descending_csv(_embedded_table("nasdaq"), path)

    mine = HistorySource(path)
    assert mine.symbol == "NASDAQ_COMPOSITE"  # the file's stem, made fit for a weekly code
    assert len(mine.list_codes()) == 1039
    assert next(iter(mine.list_codes())) == "NASDAQ_COMPOSITE-1999-03-05"

    named = HistorySource(path, "NASDAQ")
    assert named.list_codes() == nasdaq.list_codes()
    n = named.history.ts.size
    for code in ("NASDAQ-2000-04-14", "NASDAQ-2018-12-28"):
        theirs, ours = nasdaq.load(code), named.load(code)
        assert ours.drop(LINEAGE_COLUMNS).equals(theirs.drop(LINEAGE_COLUMNS)), code
        assert (ours["source_row"] == n + 1 - theirs["source_row"]).all()  # rows of the file
        assert set(ours["source_file"]) == {str(path)}


def test_a_parquet_history_loads_like_the_csv(tmp_path: Path) -> None:
    table = _embedded_table("nasdaq").tail(300)
    table.write_csv(tmp_path / "ndx.csv")
    table.write_parquet(tmp_path / "ndx.parquet")
    csv, parquet = HistorySource(tmp_path / "ndx.csv"), HistorySource(tmp_path / "ndx.parquet")
    assert csv.list_codes() == parquet.list_codes()
    code = list(csv.list_codes())[10]
    assert csv.load(code).drop("source_file").equals(parquet.load(code).drop("source_file"))


def test_intraday_bars_load(tmp_path: Path) -> None:
    """A ``ts`` history: hourly bars, quoted at each bar, the vol model on daily closes."""
    days = pl.date_range(date(2024, 1, 1), date(2024, 4, 30), eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    hours = [datetime(d.year, d.month, d.day, h, 30) for d in days.to_list() for h in range(14, 21)]
    rng = np.random.Generator(np.random.PCG64(5))
    close = 400.0 * np.exp(np.cumsum(0.004 * rng.standard_normal(len(hours))))
    path = tmp_path / "spy_hourly.csv"
    pl.DataFrame({"ts": hours, "close": close}).write_csv(path)

    source = HistorySource(path)
    codes = list(source.list_codes())
    # Listed after the Friday close of 2024-02-02 (21:00 UTC; the history's 25th day), so
    # quoted from Monday's first bar: every bar of four weeks, the expiry Friday's included.
    assert codes[0] == "SPY_HOURLY-2024-03-01"
    frame = source.load(codes[0])
    assert frame["ts"].n_unique() == 20 * 7
    assert validate_chain(frame).quarantined.is_empty()


def test_unknown_code_and_bad_settings(sp500: HistorySource) -> None:
    with pytest.raises(UnknownWeeklyCodeError, match="SP500-1999-03-05"):
        sp500.load("SP500-2008-10-16")  # a Thursday
    with pytest.raises(ValueError, match="HEDGE_HISTORY_SYMBOL"):
        HistorySource("sp500", "S&P 500")
    with pytest.raises(ValueError, match="weeks"):
        HistorySource("sp500", weeks=0)
    with pytest.raises(ValueError, match="needs HEDGE_HISTORY"):
        ChainSourceResource(kind="history").build()
    with pytest.raises(ChainDataError, match="not a history"):
        HistorySource("sp600").list_codes()


def test_weeks_sets_each_codes_life() -> None:
    two = HistorySource("sp500", weeks=2)
    frame = two.load(CRASH)
    assert frame["ts"].n_unique() == 11 and frame["ts"].min() == datetime(
        2008, 10, 3, 20, tzinfo=UTC
    )
    assert two.list_codes()[CRASH] != HistorySource("sp500").list_codes()[CRASH]


# --------------------------------------------------------------------------- malformed files

GOOD_ROWS = 60  # enough daily returns to list a few codes


def _good_csv() -> list[str]:
    """A clean daily history, one line per row (header first): 60 weekdays from 2021-01-04."""
    days = pl.date_range(date(2021, 1, 4), date(2021, 4, 30), eager=True)
    days = days.filter(days.dt.weekday() <= 5).head(GOOD_ROWS)
    close = 100.0 * np.exp(np.cumsum(0.01 * np.sin(np.arange(GOOD_ROWS))))
    return ["date,close,iv"] + [
        f"{d},{c:.2f},0.2" for d, c in zip(days.to_list(), close, strict=True)
    ]


def _with(row: int, line: str | None) -> list[str]:
    lines = _good_csv()
    if line is None:
        del lines[row]
    else:
        lines[row] = line
    return lines


# name -> (lines, row, column, what the message says)
MALFORMED: dict[str, tuple[list[str], int | None, str, str]] = {
    "unparseable date": (_with(7, "2021-13-45,101.5,0.2"), 7, "date", "not a date"),
    "duplicate date": (
        _with(9, "2021-01-05,101.5,0.2"),
        9,
        "date",
        "duplicate date 2021-01-05 (first at row 2)",
    ),
    "non-positive close": (
        _with(12, "2021-01-20,-3.5,0.2"),
        12,
        "close",
        "positive number: '-3.5'",
    ),
    "missing close": (_with(15, "2021-01-25,,0.2"), 15, "close", "missing close"),
    "close not a number": (_with(16, "2021-01-26,n/a,0.2"), 16, "close", "not a number: 'n/a'"),
    "iv in percent": (_with(18, "2021-01-28,101.5,21.3"), 18, "iv", "percentage points"),
    "missing column": (
        ["date,price,iv", *_good_csv()[1:]],
        None,
        "close",
        "missing required column",
    ),
    "no date column": (["day,close,iv", *_good_csv()[1:]], None, "date", "'ts' for intraday bars"),
}


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_clean_corpus_file_loads(tmp_path: Path) -> None:
    source = HistorySource(_write(tmp_path, _good_csv()))
    codes = source.list_codes()
    # The first Friday listing with 20 daily returns behind it is 2021-02-05; it expires 03-05.
    assert list(codes) == [
        f"PRICES-2021-{d}"
        for d in ("03-05", "03-12", "03-19", "03-26", "04-02", "04-09", "04-16", "04-23")
    ]
    for code in codes:
        assert validate_chain(source.load(code)).quarantined.is_empty()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_history_names_file_row_and_column(name: str, tmp_path: Path) -> None:
    lines, row, column, expect = MALFORMED[name]
    path = _write(tmp_path, lines)
    with pytest.raises(ChainDataError) as caught:
        HistorySource(path).list_codes()
    where = f"{path}, row {row}, column {column!r}" if row else f"{path}, column {column!r}"
    assert str(caught.value).startswith(f"{where}: "), str(caught.value)
    assert expect in str(caught.value)
    assert (caught.value.location.row, caught.value.location.column) == (row, column)


@pytest.mark.parametrize("name", sorted(n for n in MALFORMED if MALFORMED[n][1] is not None))
def test_quarantine_drops_the_bad_row_and_says_why(name: str, tmp_path: Path) -> None:
    lines, row, column, expect = MALFORMED[name]
    source = HistorySource(_write(tmp_path, lines), bad_rows="quarantine")
    assert source.list_codes()
    assert source.quarantined.rows() == [(row, column, source.quarantined["reason"][0])]
    assert expect in source.quarantined["reason"][0]
    assert row not in source.history.row.tolist()
    assert source.history.ts.size == GOOD_ROWS - 1


def test_descending_dates_are_sorted_and_rows_keep_their_numbers(tmp_path: Path) -> None:
    lines = _good_csv()
    ascending = HistorySource(_write(tmp_path, lines))
    codes = ascending.list_codes()
    frames = {code: ascending.load(code) for code in codes}
    descending = HistorySource(_write(tmp_path, [lines[0], *reversed(lines[1:])]))
    assert descending.list_codes() == codes
    for code, frame in frames.items():
        theirs = descending.load(code)
        assert theirs.drop("source_row").equals(frame.drop("source_row"))
        assert (theirs["source_row"] == GOOD_ROWS + 1 - frame["source_row"]).all()


# --------------------------------------------------------------------------- through Dagster


def test_a_code_materializes_through_dagster_with_passing_checks(instance) -> None:
    result = materialize_code(instance, CRASH, kind="history", history="sp500")
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert result.success and all(checks.values()), checks
    from hedge_pipeline.runtime import paths

    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        stored = warehouse.read_partition(con, "raw_option_chains", CRASH)
    assert stored.equals(HistorySource("sp500").load(CRASH).select(RAW_COLUMNS))


def test_a_malformed_history_fails_the_run_and_stores_nothing(instance, tmp_path: Path) -> None:
    lines, row, column, _ = MALFORMED["non-positive close"]
    path = _write(tmp_path, lines)
    code = "PRICES-2021-03-05"
    result = materialize_code(instance, code, raise_on_error=False, kind="history", history=path)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert f"{path}, row {row}, column {column!r}" in failure.step_failure_data.error.message
    from hedge_pipeline.runtime import paths

    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        assert warehouse.read_partition(con, "raw_option_chains", code).is_empty()


def test_lifetimes_say_before_loading_what_the_warehouse_will_read() -> None:
    """``lifetimes`` (what ``hedge run`` picks an as_of's codes by) agrees with the quotes a
    code loads: first and last bar, expiry."""
    source = HistorySource("sp500")
    lifetimes = source.lifetimes()
    assert lifetimes.height == len(source.list_codes())
    for code in ("SP500-2008-10-17", "SP500-2018-12-28", "SP500-2019-01-25"):
        quotes = source.load(code)
        row = lifetimes.filter(pl.col("weekly_code") == code).row(0, named=True)
        assert row["first_ts"] == quotes["ts"].min() and row["last_ts"] == quotes["ts"].max()
        assert row["expiry"] == quotes["expiry"][0]
