"""The ``history`` source: weekly option books on a real price history (docs/design.md §4).

The underlying is real; the options are made here, the way the ``synthetic`` source makes
them (``quoting``: smile, spread, ticks, trades, open interest), around the real prices.

**Input** (``HEDGE_HISTORY``): a CSV or Parquet file, or an embedded series:

* ``sp500``, ``nasdaq``: the S&P 500 and NASDAQ Composite daily closes 1999-01-04 to 2018-12-31
  (5,031 days each) that the ``arch`` package ships (``arch.data.sp500`` / ``.nasdaq``), read
  offline (the files are read directly; importing ``arch`` takes seconds). For ``sp500`` the
  VIX that ``arch`` ships (``arch.data.vix``, 2014-01-03 to 2019-01-03, in percentage points)
  divided by 100 is its ``iv``: every S&P 500 day from 2014-01-03 has one (the VIX's 46
  missing days are exchange holidays).
* ``wti``: the WTI crude oil spot close (FRED's DCOILWTICO) 1986-01-02 to 2019-01-03 that
  ``arch`` ships (``arch.data.wti``): 8,321 days with a price, 1,718 weekly codes, the longest
  real series here and a commodity rather than an index (close only; no ``iv``).
* A file's columns, headers trimmed and case-insensitive: ``date`` (daily closes, ISO
  ``YYYY-MM-DD``, a midnight time allowed) or ``ts`` (intraday bars, the ``files`` source's
  timestamp grammar: ISO-8601, naive means UTC), and ``close``; optional ``open``, ``high``,
  ``low`` (checked, not used) and ``iv`` (annualized ATM implied vol in decimals, blank where
  unknown). Other columns are ignored; rows may come in any order (descending exports are
  sorted). The symbol (``HEDGE_HISTORY_SYMBOL``) defaults to the file's stem, upper-cased,
  with characters a weekly code cannot hold replaced by ``_``; ``SP500``/``NASDAQ`` for the
  embedded series.

**Bad rows** raise ``ChainDataError`` naming file, 1-based data row and column: a date that
does not parse, a duplicate date (the later row in file order), a missing or non-positive
close, an ``iv``/``open``/``high``/``low`` that is not a positive number (an ``iv`` above 5
is taken for percentage points and refused). A missing ``date``/``ts`` or ``close`` column,
an empty or unreadable file always raise. Under ``HEDGE_BAD_ROWS=quarantine`` bad rows are
dropped instead (logged with their reasons, kept in ``HistorySource.quarantined``); they do
not reach the ``quarantined_quotes`` table, which holds option quotes.

**Time.** A daily bar is the day's close, 16:00 America/New_York (20:00 or 21:00 UTC with
daylight saving). Each Friday expiry gets one weekly code ``<SYMBOL>-<YYYY-MM-DD>`` that
expires at 16:00 New York on that Friday, is listed at 16:00 New York on the Friday ``weeks``
(default 4) weeks earlier, and is quoted at every bar from listing to expiry inclusive: 21
daily bars, the last at expiry (τ = 0, worth intrinsic). A Friday without a bar (Good
Friday) still expires then; its last quote is Thursday's. A code exists once its listing has
a bar and the history holds ``MIN_RETURNS`` daily returns by then (warm-up of the vol model);
codes still alive at the history's last bar are listed with the bars so far: 1,039 codes for
``sp500`` (and for ``nasdaq``), 1999-03-05 to 2019-01-25, the last four alive at 2018-12-31.
``list_codes`` reads only the bar times; the vol path is computed on the first ``load`` (about
2.5 s once per process, most of it imports), after which a code loads in milliseconds.

**Book.** 9 strikes, each with a put and a call (18 options): a grid of step ≈ half a
standard deviation to expiry at listing (S·σ_atm·√τ/2, rounded to 1, 2, 2.5 or 5 × 10^k)
centred on the forward at listing. ``underlying_kind='equity'``, rate 0 and dividend yield 0
(Black–Scholes on spot; the forward is the spot: over 1999–2018 the index's dividend yield
and the short rate roughly offset, and over four weeks carry moves the forward by well under
one strike step). Option tick 0.01.

**Volatility, causally.** The ATM level at a bar uses nothing after that bar:

1. GARCH(1,1) with zero mean and variance targeting on daily close-to-close log returns (in
   percent; the last bar of each UTC day is the day's close): σ²_next = ω + α·r² + β·σ², with
   the long-run variance the mean squared return so far and ω = that·(1 − α − β). α and β
   start from a prior (0.08, 0.90); once ``MIN_FIT_RETURNS`` returns exist they are refitted
   by quasi-maximum likelihood (``fit_garch``) at the first close of each calendar quarter on
   all returns up to that close; a fit that fails keeps the previous values. A bar uses the
   forecast made at the latest daily close at or before it.
   Why not ``arch.arch_model`` itself: every Dagster step is a fresh process, and importing
   ``arch`` costs 2–4 s there before its ~13 ms fits; the targeted two-parameter fit with an
   exact gradient takes ~4 ms (after a ~1.5 s ``scipy.signal`` import), 70-odd fits for sp500,
   and a test holds it close to ``arch_model``'s three-parameter fit. Quarterly, not monthly:
   an expanding window's parameters barely move in a month, and the fits are the cost.
2. The model's ATM vol for τ is the square root of the expected mean variance to expiry,
   L + (σ²_next − L)·(1 − e^{−κh})/(κh) with κ = −ln(α + β), h = τ·252 trading days: the term
   structure of ``HestonParams.mean_variance``, in GARCH's terms (``garch_atm_vol``).
3. Where a bar has ``iv``, it is read as the 30-day ATM vol (the VIX's horizon): the ATM vol
   for τ is ``iv`` × model(τ) / model(30 days). Elsewhere ``iv`` is replaced by model(30 days)
   × the implied/realized ratio measured on the last 250 earlier bars with ``iv``, shrunk
   towards a prior of 1.1 (a modest variance risk premium, chosen, not fitted) with the
   weight of 20 observations; with no ``iv`` ever seen (``nasdaq``, ``sp500`` before 2014)
   the ratio is the prior. For the record, on sp500 2014–2018 the VIX averages 1.07 × the
   model (geometric mean, correlation 0.85), and the model gives a 30-day ATM vol of 75 % on
   2008-11-20, the day the VIX closed at its record 80.86.

So a code's rows are the same whether the history ends at its expiry or years later; the
look-ahead test holds this for daily data. With intraday bars, cut the history at a day
boundary: a cut inside a UTC day makes its last bar that day's close.

**Reproducible.** Same history, same bytes: noise is drawn from a generator seeded by the
code's name, and the vol path is a deterministic function of the history. The fingerprint
hashes the generator version, the settings and the history up to the code's last bar.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache, cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from numpy.typing import NDArray

from hedge_pipeline.quant.market_sim import FloatArray, SmileParams
from hedge_pipeline.quant.pricing import bs_greeks
from hedge_pipeline.stages.market_data.sources.files import read_csv_text, to_float
from hedge_pipeline.stages.market_data.sources.files import to_utc as parse_utc_timestamps
from hedge_pipeline.stages.market_data.sources.quoting import (
    atm_smile_iv,
    bid_ask_ticks,
    half_spread,
    open_interest,
    standardized_atm_moneyness,
    trades,
)
from hedge_pipeline.stages.market_data.validation import POLICIES
from hedge_pipeline.tables.schema import (
    LINEAGE_COLUMNS,
    RAW_COLUMNS,
    UTC_TS,
    WEEKLY_CODE_RE,
    ChainDataError,
    Location,
    UnknownWeeklyCodeError,
    option_symbol,
)

log = logging.getLogger(__name__)

# Bump whenever a change alters the generated rows: it is part of every fingerprint.
GENERATOR_VERSION = "history-1"

EMBEDDED: tuple[str, ...] = ("sp500", "nasdaq", "wti")
TABLE_SUFFIXES = (".csv", ".parquet")
EXCHANGE_TZ = ZoneInfo("America/New_York")
CLOSE_TIME = time(16, 0)  # the daily bar and the expiry: the New York close
WEEKS = 4

STRIKES_PER_SIDE = 4  # 9 strikes, a put and a call at each
STEP_SD = 0.5  # strike step in standard deviations to expiry at listing
RATE = 0.0
DIVIDEND_YIELD = 0.0
OPTION_TICKS = 100  # tick 0.01
SMILE = SmileParams(wing=0.2, skew=-0.7)
DAILY_TRADE_SIZE = 600.0  # contracts an ATM option trades on a day (on top of one)
BAR_TRADE_SIZE = 8.0  # ... in an intraday bar, as the synthetic 5-minute bars

TRADING_DAYS = 252
MIN_RETURNS = 20  # daily returns needed before a code is listed
MIN_FIT_RETURNS = 500  # returns before the first GARCH fit (about two years)
PRIOR_ALPHA, PRIOR_BETA = 0.08, 0.90
MAX_PERSISTENCE = 0.999  # a fitted α + β above this is not used (no finite long-run level)
IV_TENOR = 30.0 / 365.0  # the horizon an ``iv`` value is read at (the VIX's)
PRIOR_IV_RATIO = 1.1
RATIO_WINDOW = 250
RATIO_PRIOR_WEIGHT = 20.0
ATM_BOUNDS = (0.01, 5.0)  # clip the ATM vol to this range: a sane book whatever the input

_US_PER_YEAR = 365 * 86_400 * 1_000_000  # ACT/365, as the pipeline computes tau
_US_PER_DAY = 86_400 * 1_000_000
_DATE_TEXT = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[ T]00:00(?::00(?:\.0*)?)?)?$")
_NOT_IN_CODE = re.compile(r"[^A-Za-z0-9_-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CACHE_SIZE = 4  # vol paths kept per process (one per history in use, in practice)


# --------------------------------------------------------------------------- the history


@dataclass(frozen=True)
class History:
    """A parsed price history, sorted by time.

    ``ts`` are UTC microseconds (daily bars at the New York close), ``iv`` is NaN where the
    file gives none, ``row`` is each bar's 1-based data row in the file (its lineage).
    ``quarantined`` holds the rows dropped under the quarantine policy (row, column, reason).
    """

    file: str
    daily: bool
    ts: NDArray[np.int64]
    close: FloatArray
    iv: FloatArray
    row: NDArray[np.int64]
    quarantined: pl.DataFrame

    @cached_property
    def prefix_digests(self) -> list[bytes]:
        """``digests[i]``: a hash chained over bars 0..i (time, close, iv), for fingerprints."""
        records = np.column_stack(
            [self.ts, self.close.view(np.int64), self.iv.view(np.int64)]
        ).tobytes()
        digest = hashlib.blake2b(f"{GENERATOR_VERSION}|{self.daily}".encode(), digest_size=16)
        out = []
        for i in range(self.ts.size):
            digest = hashlib.blake2b(
                digest.digest() + records[24 * i : 24 * i + 24], digest_size=16
            )
            out.append(digest.digest())
        return out


def read_history(spec: str | Path, bad_rows: str = "reject") -> History:
    """The history ``spec`` names (an embedded series or a file), parsed under ``bad_rows``."""
    if bad_rows not in POLICIES:
        raise ValueError(f"unknown bad-row policy {bad_rows!r}; expected one of {POLICIES}")
    name = str(spec).strip()
    if name.lower() in EMBEDDED:
        return _parse(_embedded(name.lower()), f"arch:{name.lower()}", bad_rows)
    path = Path(name).expanduser()
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ChainDataError(
            Location(name),
            f"not a history: expected one of {', '.join(EMBEDDED)} or a .csv / .parquet file",
        )
    if not path.is_file():
        raise ChainDataError(Location(name), "no such file")
    return _parse(_read_table(path, name), name, bad_rows)


def _arch_data(name: str) -> pl.DataFrame:
    """One of the ``arch`` package's data files, read without importing ``arch`` (seconds).

    Dates are written ``M/D/YYYY``; a missing value is ``.`` (FRED's spelling).
    """
    spec = importlib.util.find_spec("arch")
    if spec is None or not spec.submodule_search_locations:
        raise ChainDataError(
            Location(f"arch:{name}"), "the embedded series need the arch package (arch==8.0.0)"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / name / f"{name}.csv.gz"
    frame = pl.read_csv(path, infer_schema=False, null_values=["."])
    return frame.select(
        pl.col("Date").str.to_date("%m/%d/%Y").alias("date"),
        pl.exclude("Date").cast(pl.Float64).name.to_lowercase(),
    )


@cache
def _embedded(name: str) -> pl.DataFrame:
    """An embedded series as a table of the file format (``date``, ``close``, ..., ``iv``).

    ``wti`` is FRED's daily spot close only; its missing days (``.``, exchange holidays) are
    days without a bar, as in a user's export."""
    if name == "wti":
        return _arch_data(name).select("date", close="dcoilwtico").drop_nulls("close")
    frame = _arch_data(name).select("date", "open", "high", "low", "close")
    if name != "sp500":
        return frame
    implied = _arch_data("vix").select("date", (pl.col("vix") / 100.0).alias("iv"))
    return frame.join(implied, on="date", how="left", maintain_order="left")


def _read_table(path: Path, file: str) -> pl.DataFrame:
    """The file with trimmed, lower-cased headers; CSV cells as text (typed per column later,
    so that a bad cell can be named)."""
    try:
        is_csv = path.suffix.lower() == ".csv"
        frame = read_csv_text(path, file) if is_csv else pl.read_parquet(path)
    except pl.exceptions.PolarsError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise ChainDataError(Location(file), f"unreadable file: {detail}") from exc
    frame = frame.rename(lambda c: c.strip().lower())
    if frame.height == 0:
        raise ChainDataError(Location(file), "empty file: no data rows")
    return frame


def _to_date(raw: pl.Series) -> pl.Series:
    """Dates; a datetime at midnight counts as its date; anything else becomes null."""
    if raw.dtype == pl.Date:
        return raw
    if isinstance(raw.dtype, pl.Datetime):
        midnight = raw.dt.time() == time(0)
        return pl.select(pl.when(midnight).then(raw.dt.date())).to_series()
    if raw.dtype != pl.String:
        return pl.Series(raw.name, [None] * raw.len(), pl.Date)
    text = raw.str.strip_chars().str.extract(_DATE_TEXT.pattern, 1)
    return text.str.to_date("%Y-%m-%d", strict=False)


def _blank(raw: pl.Series) -> pl.Series:
    """Where a cell holds nothing: null, or (CSV) only spaces."""
    if raw.dtype == pl.String:
        return raw.is_null() | (raw.str.strip_chars() == "")
    return raw.is_null()


_PROBLEMS = {"row": pl.Int64(), "column": pl.String(), "reason": pl.String()}


def _flag(
    found: list[pl.DataFrame],
    row: pl.Series,
    bad: pl.Series,
    column: str,
    reason: str,
    raw: pl.Series | None = None,
) -> None:
    """Record the rows where ``bad`` holds, with ``reason`` (and the cell, where given)."""
    bad = bad.fill_null(False)
    if not bad.any():
        return
    rows = row.filter(bad)
    if raw is None:
        reasons = [reason] * rows.len()
    else:
        reasons = [f"{reason}: {value!r}" for value in raw.filter(bad).to_list()]
    found.append(pl.DataFrame({"row": rows, "column": column, "reason": reasons}, schema=_PROBLEMS))


def _parse(frame: pl.DataFrame, file: str, bad_rows: str) -> History:
    """Type, check and sort the rows; every problem names its 1-based row and column."""
    daily = "date" in frame.columns
    if daily and "ts" in frame.columns:
        raise ChainDataError(
            Location(file, column="ts"),
            "ambiguous: both 'date' (daily closes) and 'ts' (intraday bars); keep one",
        )
    for column in ("date" if daily else "ts", "close"):
        if column not in frame.columns:
            what = " ('date' for daily closes, or 'ts' for intraday bars)" if column == "ts" else ""
            raise ChainDataError(
                Location(file, column="date" if column == "ts" else column),
                f"missing required column{what}",
            )
    time_column = "date" if daily else "ts"
    row = pl.Series("row", range(1, frame.height + 1), pl.Int64)
    found: list[pl.DataFrame] = []

    raw_time = frame.get_column(time_column)
    if daily:
        naive = _to_date(raw_time).cast(pl.Datetime("us")) + timedelta(hours=CLOSE_TIME.hour)
        stamp = naive.dt.replace_time_zone(EXCHANGE_TZ.key).dt.convert_time_zone("UTC")
        expected = "not a date (expected YYYY-MM-DD)"
    else:
        stamp = parse_utc_timestamps(raw_time)
        expected = "not an ISO-8601 timestamp"
    time_blank = _blank(raw_time)
    _flag(found, row, time_blank, time_column, f"missing {time_column}")
    _flag(found, row, stamp.is_null() & ~time_blank, time_column, expected, raw_time)

    raw_close = frame.get_column("close")
    close = to_float(raw_close)
    close_blank = _blank(raw_close) | close.is_nan().fill_null(False)
    _flag(found, row, close_blank, "close", "missing close")
    _flag(found, row, close.is_null() & ~close_blank, "close", "not a number", raw_close)
    positive = "close must be a positive number"
    _flag(found, row, (close <= 0) | close.is_infinite(), "close", positive, raw_close)

    iv = pl.Series("iv", [None] * frame.height, pl.Float64)
    for column in ("iv", "open", "high", "low"):
        if column not in frame.columns:
            continue
        raw = frame.get_column(column)
        value = to_float(raw)
        blank = _blank(raw) | value.is_nan().fill_null(False)  # NaN: not given, as a blank
        _flag(found, row, value.is_null() & ~blank, column, "not a number", raw)
        bad_value = value.is_infinite() | (value <= 0)
        _flag(found, row, bad_value, column, f"{column} must be a positive number", raw)
        if column == "iv":
            percent = "iv looks like percentage points, not decimals (write 0.2 for 20%)"
            _flag(found, row, value.is_finite() & (value > 5.0), column, percent, raw)
            iv = value.fill_nan(None)

    problems = pl.concat(found) if found else pl.DataFrame(schema=_PROBLEMS)
    # A duplicate is judged among the rows that are otherwise fine: the first in file order
    # stays, so quarantining a bad row never also drops the good row that shares its date.
    fine = pl.DataFrame({"row": row, "stamp": stamp}).filter(~row.is_in(problems["row"].implode()))
    first = fine.group_by("stamp", maintain_order=True).agg(pl.col("row").first().alias("first"))
    dupes = fine.join(first, on="stamp").filter(pl.col("row") != pl.col("first")).sort("row")
    what = "date" if daily else "timestamp"
    shown = raw_time.cast(pl.String).str.strip_chars()
    reasons = [
        f"duplicate {what} {shown[r - 1]} (first at row {f})"
        for r, f in zip(dupes["row"].to_list(), dupes["first"].to_list(), strict=True)
    ]
    duplicates = pl.DataFrame(
        {"row": dupes["row"], "column": time_column, "reason": reasons}, schema=_PROBLEMS
    )
    problems = pl.concat([problems, duplicates]).sort("row", maintain_order=True)
    bad = row.is_in(problems["row"].implode())
    n_bad = int(bad.sum())

    if n_bad:
        first_problem = problems.row(0, named=True)
        where = Location(file, first_problem["row"], first_problem["column"])
        if bad_rows == "reject":
            raise ChainDataError(where, first_problem["reason"], more=n_bad - 1)
        if n_bad == frame.height:
            raise ChainDataError(
                Location(file),
                f"every row is bad ({n_bad} rows); first: {where}: {first_problem['reason']}",
            )
        log.warning(
            "quarantined %d bad history rows; first: %s: %s", n_bad, where, first_problem["reason"]
        )

    kept = (
        pl.DataFrame(
            {
                "ts": stamp.dt.replace_time_zone(None).cast(pl.Int64),
                "close": close,
                "iv": iv.fill_null(np.nan),
                "row": row,
            }
        )
        .filter(~bad)
        .sort("ts")
    )
    return History(
        file=file,
        daily=daily,
        ts=kept["ts"].to_numpy().astype(np.int64),
        close=kept["close"].to_numpy().astype(np.float64),
        iv=kept["iv"].to_numpy().astype(np.float64),
        row=kept["row"].to_numpy().astype(np.int64),
        quarantined=problems,
    )


def daily_closes(ts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Index of each day's close among sorted bars: the last bar of each UTC calendar day.

    >>> day = 86_400_000_000
    >>> daily_closes(np.array([0, 5, 9, day + 1, 3 * day]) ).tolist()
    [2, 3, 4]
    """
    days = ts // _US_PER_DAY
    return np.flatnonzero(np.append(days[1:] != days[:-1], True)).astype(np.int64)


def garch_atm_vol(
    next_var: FloatArray | float,
    long_var: FloatArray | float,
    kappa: FloatArray | float,
    tau: FloatArray | float,
) -> FloatArray:
    """Annualized ATM vol to expiry from a GARCH(1,1) forecast (variances in %² per day).

    The square root of the expected mean daily variance over the h = τ·252 trading days to
    expiry, L + (σ²_next − L)·(1 − e^{−κh})/(κh), with κ = −ln(α + β): short options follow
    the current variance, long ones the long-run level L (as ``HestonParams.mean_variance``).

    >>> round(float(garch_atm_vol(1.0, 1.0, 0.05, 0.25)), 4)  # at the long-run level: flat
    0.1587
    >>> vols = garch_atm_vol(4.0, 1.0, 0.05, np.array([0.0, 7 / 365, 1.0]))
    >>> [round(float(v), 4) for v in vols]  # high vol now, reverting over the year
    [0.3175, 0.3039, 0.1766]
    """
    h = np.maximum(np.asarray(tau, dtype=np.float64) * TRADING_DAYS, 1e-9)
    kh = np.asarray(kappa, dtype=np.float64) * h
    weight = -np.expm1(-kh) / kh
    long_var = np.asarray(long_var, dtype=np.float64)
    mean_var = long_var + (np.asarray(next_var, dtype=np.float64) - long_var) * weight
    return np.sqrt(TRADING_DAYS * mean_var) / 100.0


def fit_garch(returns: FloatArray) -> tuple[float, float] | None:
    """(α, β) of a zero-mean GARCH(1,1) with variance targeting, by Gaussian quasi-likelihood.

    σ²_t = ω + α·r²_{t−1} + β·σ²_{t−1} with ω = v̄·(1 − α − β), v̄ the mean squared return
    (Engle & Mezrich's variance targeting: two parameters, not three, so a fit takes a few
    milliseconds; σ²_0 = v̄). The recursion and its derivatives are linear filters, so the
    likelihood and its exact gradient are vectorized, and SLSQP keeps α, β ≥ 0 and
    α + β ≤ ``MAX_PERSISTENCE``. The same returns always give the same numbers (no random
    start). None when the fit fails or lands on the persistence bound (no finite long run).
    A test holds the result close to ``arch.arch_model``'s full GARCH(1,1) fit.

    >>> rng = np.random.Generator(np.random.PCG64(3))
    >>> var, r = 1.0, np.empty(4000)
    >>> for t in range(r.size):
    ...     r[t] = np.sqrt(var) * rng.standard_normal()
    ...     var = 0.05 + 0.10 * r[t] ** 2 + 0.85 * var
    >>> [round(p, 2) for p in fit_garch(r)]  # simulated with α = 0.10, β = 0.85
    [0.1, 0.83]
    """
    from scipy.optimize import minimize
    from scipy.signal import lfilter

    r2 = np.asarray(returns, dtype=np.float64) ** 2
    target = float(r2.mean()) if r2.size else math.nan
    if not (r2.size >= 2 and math.isfinite(target) and target > 0.0):
        return None
    lagged = np.concatenate([[target], r2[:-1]])

    def objective(x: FloatArray) -> tuple[float, FloatArray]:
        alpha, beta = x
        drive = target * (1.0 - alpha - beta) + alpha * lagged
        drive[0] += beta * target  # so that σ²_0 = v̄
        var = lfilter([1.0], [1.0, -beta], drive)
        previous = np.concatenate([[target], var[:-1]])
        d_alpha = lfilter([1.0], [1.0, -beta], lagged - target)
        d_beta = lfilter([1.0], [1.0, -beta], previous - target)
        weight = 0.5 * (1.0 / var - r2 / var**2)
        value = 0.5 * float(np.sum(np.log(var) + r2 / var))
        return value, np.array([weight @ d_alpha, weight @ d_beta])

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fitted = minimize(
            objective,
            np.array([PRIOR_ALPHA, PRIOR_BETA]),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0), (0.0, 1.0)],
            constraints=[
                {
                    "type": "ineq",
                    "fun": lambda x: MAX_PERSISTENCE - x[0] - x[1],
                    "jac": lambda x: np.array([-1.0, -1.0]),
                }
            ],
        )
    alpha, beta = (float(p) for p in fitted.x)
    usable = (
        fitted.success
        and math.isfinite(fitted.fun)
        and alpha >= 0.0
        and beta >= 0.0
        and 0.0 < alpha + beta < MAX_PERSISTENCE - 1e-6
    )
    return (alpha, beta) if usable else None


@dataclass(frozen=True)
class VolPath:
    """The causal at-the-money vol of every bar of a history (see the module docstring).

    Per daily close d: the GARCH forecast made at its close (``next_var``, %² per trading day;
    NaN before the first return), the long-run variance ``long_var`` and mean reversion
    ``kappa`` (per trading day) in effect. Per bar b: ``day[b]``, the latest daily close at or
    before b (−1: none yet), and ``ratio[b]``, implied over model vol (the bar's own ``iv``,
    else the shrunk average of earlier bars').
    """

    day: NDArray[np.int64]
    next_var: FloatArray
    long_var: FloatArray
    kappa: FloatArray
    ratio: FloatArray

    def atm(self, bars: NDArray[np.int64], tau: FloatArray) -> FloatArray:
        """ATM vol of ``bars`` for the times to expiry ``tau`` (years)."""
        d = self.day[bars]
        model = garch_atm_vol(self.next_var[d], self.long_var[d], self.kappa[d], tau)
        return np.clip(self.ratio[bars] * model, *ATM_BOUNDS)


def vol_path(history: History) -> VolPath:
    """Compute a history's ``VolPath``, strictly causally.

    Plain Python floats and ``math``: every value depends only on earlier values, computed the
    same way whatever the history's length (vectorized transcendental functions may round
    the tail of an array differently), so a cut history gives identical values.
    """
    closes = daily_closes(history.ts)
    n = closes.size
    price = history.close[closes].tolist()
    close_dates = (history.ts[closes] // _US_PER_DAY).astype("datetime64[D]").astype(date)
    quarter = [d.year * 4 + (d.month - 1) // 3 for d in close_dates]
    next_var, long_var, kappa = (np.full(n, np.nan) for _ in range(3))
    returns = np.full(n, np.nan)
    alpha, beta = PRIOR_ALPHA, PRIOR_BETA
    sum_sq, var = 0.0, math.nan
    for d in range(1, n):
        r = 100.0 * math.log(price[d] / price[d - 1])
        returns[d] = r
        sum_sq += r * r
        if d >= MIN_FIT_RETURNS and quarter[d] != quarter[d - 1]:
            alpha, beta = fit_garch(returns[1 : d + 1].copy()) or (alpha, beta)
        target = sum_sq / d  # the long-run variance: mean squared return so far
        previous = var if d > 1 else r * r
        var = target * (1.0 - alpha - beta) + alpha * r * r + beta * previous
        next_var[d], long_var[d], kappa[d] = var, target, -math.log(alpha + beta)

    day = np.searchsorted(history.ts[closes], history.ts, side="right").astype(np.int64) - 1
    model_30d = [math.nan] * n
    for d in range(1, n):
        kh = kappa[d] * IV_TENOR * TRADING_DAYS
        mean_var = long_var[d] + (next_var[d] - long_var[d]) * (-math.expm1(-kh) / kh)
        model_30d[d] = math.sqrt(TRADING_DAYS * mean_var) / 100.0
    ratio = np.full(history.ts.size, np.nan)
    prior = math.log(PRIOR_IV_RATIO)
    sums = [0.0]  # prefix sums of the log ratios observed so far
    for b, (d, iv) in enumerate(zip(day.tolist(), history.iv.tolist(), strict=True)):
        if d < 1:
            continue
        if iv == iv:  # given (not NaN)
            ratio[b] = iv / model_30d[d]
            sums.append(sums[-1] + math.log(ratio[b]))
            continue
        seen = len(sums) - 1
        lo = max(seen - RATIO_WINDOW, 0)
        count = seen - lo
        ratio[b] = math.exp(
            (sums[seen] - sums[lo] + RATIO_PRIOR_WEIGHT * prior) / (count + RATIO_PRIOR_WEIGHT)
        )
    return VolPath(day, next_var, long_var, kappa, ratio)


_VOL_CACHE: OrderedDict[bytes, VolPath] = OrderedDict()


def cached_vol_path(history: History) -> VolPath:
    """``vol_path(history)``, computed once per process per history content."""
    key = history.prefix_digests[-1]
    if key in _VOL_CACHE:
        _VOL_CACHE.move_to_end(key)
        return _VOL_CACHE[key]
    path = _VOL_CACHE[key] = vol_path(history)
    while len(_VOL_CACHE) > _CACHE_SIZE:
        _VOL_CACHE.popitem(last=False)
    return path


# --------------------------------------------------------------------------- the book


def strike_step(raw: float) -> tuple[int, int]:
    """The round step nearest to ``raw`` in ratio, as (M, E): step = M·10^E, M in 1, 2, 25, 5.

    >>> strike_step(33.2), strike_step(0.7), strike_step(140.0)
    ((25, 0), (5, -1), (1, 2))
    """
    e = math.floor(math.log10(raw))
    candidates = [(1, e), (2, e), (25, e - 1), (5, e), (1, e + 1)]
    return min(candidates, key=lambda c: abs(math.log(c[0] * 10.0 ** c[1] / raw)))


def strike_grid(forward: float, atm: float, tau: float) -> FloatArray:
    """``2·STRIKES_PER_SIDE + 1`` strikes, half a standard deviation apart, around ``forward``.

    Strikes are integers times a round step, so they print short and compare exactly;
    non-positive strikes (a very volatile, cheap underlying) are left out.

    >>> strike_grid(1200.0, 0.2, 28 / 365).tolist()
    [1100.0, 1125.0, 1150.0, 1175.0, 1200.0, 1225.0, 1250.0, 1275.0, 1300.0]
    >>> strike_grid(3.3, 0.3, 28 / 365).tolist()
    [2.9, 3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7]
    """
    mantissa, exponent = strike_step(STEP_SD * forward * atm * math.sqrt(tau))
    step = mantissa * 10.0**exponent
    units = round(forward / step) + np.arange(-STRIKES_PER_SIDE, STRIKES_PER_SIDE + 1)
    if exponent >= 0:
        strikes = (units * mantissa * 10**exponent).astype(np.float64)
    else:
        strikes = (units * mantissa).astype(np.float64) / float(10 ** (-exponent))
    return strikes[strikes > 0]


def _rng(code: str) -> np.random.Generator:
    """The code's own stream: its noise depends on its name only, never on other codes."""
    seed = int.from_bytes(hashlib.sha256(f"{GENERATOR_VERSION}|{code}".encode()).digest(), "big")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))


def _at_close(day: date) -> int:
    """UTC microseconds of ``day``'s New York close (16:00 America/New_York)."""
    moment = datetime.combine(day, CLOSE_TIME, tzinfo=EXCHANGE_TZ)
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class _Code:
    expiry_us: int
    first: int  # the listing bar
    stop: int  # one past the last bar quoted (at or before expiry)


def _symbol(spec: str, symbol: str | None) -> str:
    if symbol is not None and symbol.strip():
        chosen = symbol.strip()
        if not WEEKLY_CODE_RE.match(f"{chosen}-2000-01-07"):
            raise ValueError(
                f"history symbol {chosen!r} (HEDGE_HISTORY_SYMBOL) cannot start a weekly code: "
                "use letters, digits, '-' and '_' only, at most 53 characters"
            )
        return chosen
    name = spec.strip()
    if name.lower() in EMBEDDED:
        return name.upper()
    stem = _NOT_IN_CODE.sub("_", Path(name).stem.upper()).strip("_")[:53]
    return stem or "HISTORY"


class HistorySource:
    """Weekly option books on a real price history (see the module docstring).

    ``history``: ``sp500``, ``nasdaq``, ``wti`` or a CSV/Parquet path; ``symbol``: the
    underlying's name (default: from the history); ``weeks``: each code's quoted life;
    ``bad_rows``: the ``HEDGE_BAD_ROWS`` policy for the history file's own rows.
    """

    name = "history"

    def __init__(
        self,
        history: str | Path,
        symbol: str | None = None,
        *,
        weeks: int = WEEKS,
        bad_rows: str = "reject",
    ) -> None:
        if isinstance(weeks, bool) or not isinstance(weeks, int) or not 1 <= weeks <= 52:
            raise ValueError(f"weeks must be an integer from 1 to 52, got {weeks!r}")
        if bad_rows not in POLICIES:
            raise ValueError(f"unknown bad-row policy {bad_rows!r}; expected one of {POLICIES}")
        self.spec = str(history)
        self.symbol = _symbol(self.spec, symbol)
        self.weeks = weeks
        self.bad_rows = bad_rows

    def __repr__(self) -> str:
        return f"HistorySource({self.spec!r}, symbol={self.symbol!r}, weeks={self.weeks})"

    @cached_property
    def history(self) -> History:
        """The parsed history (read on first use; ``ChainDataError`` if it is bad)."""
        return read_history(self.spec, self.bad_rows)

    @property
    def quarantined(self) -> pl.DataFrame:
        """History rows dropped under the quarantine policy: row, column, reason."""
        return self.history.quarantined

    @cached_property
    def vol(self) -> VolPath:
        """The history's causal ATM vol inputs (computed once per process per history)."""
        return cached_vol_path(self.history)

    @cached_property
    def _codes(self) -> dict[str, _Code]:
        """Every code the history lists, by expiry: a cheap pass over the bar times."""
        ts = self.history.ts
        if ts.size == 0:
            return {}
        closes = daily_closes(ts)
        returns_by = np.searchsorted(ts[closes], ts, side="right") - 1
        first_day = np.datetime64(int(ts[0] // _US_PER_DAY), "D").astype(date)
        last_day = np.datetime64(int(ts[-1] // _US_PER_DAY), "D").astype(date)
        friday = first_day + timedelta(days=(4 - first_day.weekday()) % 7)
        life = timedelta(weeks=self.weeks)
        codes: dict[str, _Code] = {}
        while friday - life <= last_day:
            expiry_us, listing_us = _at_close(friday), _at_close(friday - life)
            first = int(np.searchsorted(ts, listing_us, side="left"))
            stop = int(np.searchsorted(ts, expiry_us, side="right"))
            if first < stop and returns_by[first] >= MIN_RETURNS:
                codes[f"{self.symbol}-{friday.isoformat()}"] = _Code(expiry_us, first, stop)
            friday += timedelta(weeks=1)
        return codes

    def list_codes(self) -> dict[str, str]:
        """Each code with a fingerprint over the settings and the history up to its last bar
        (the next bar too for intraday bars, which decides whether a bar closes its day)."""
        digests = self.history.prefix_digests
        last = len(digests) - 1
        out = {}
        for code, spec in self._codes.items():
            through = spec.stop - 1 if self.history.daily else min(spec.stop, last)
            head = f"{GENERATOR_VERSION}|{self.symbol}|{self.weeks}|{code}|".encode()
            out[code] = hashlib.sha256(head + digests[through]).hexdigest()
        return out

    def lifetimes(self) -> pl.DataFrame:
        """``weekly_code, first_ts, last_ts, expiry`` of every code (UTC), as
        ``read_lifetimes`` reads them from the warehouse once the code is stored: which codes
        an ``as_of`` needs is known before any is loaded."""
        codes = self._codes
        ts = self.history.ts
        return pl.DataFrame(
            {
                "weekly_code": list(codes),
                "first_ts": [ts[c.first] for c in codes.values()],
                "last_ts": [ts[c.stop - 1] for c in codes.values()],
                "expiry": [c.expiry_us for c in codes.values()],
            },
        ).with_columns(pl.exclude("weekly_code").cast(pl.Int64).cast(UTC_TS))

    def load(self, weekly_code: str) -> pl.DataFrame:
        """The code's quotes: canonical columns + lineage, sorted by (option_symbol, ts)."""
        spec = self._codes.get(weekly_code)
        if spec is None:
            raise UnknownWeeklyCodeError(weekly_code, list(self._codes))
        history = self.history
        bars = np.arange(spec.first, spec.stop)
        ts, spot = history.ts[bars], history.close[bars]
        tau = (spec.expiry_us - ts) / _US_PER_YEAR
        atm = self.vol.atm(bars, tau)
        forward = spot * np.exp((RATE - DIVIDEND_YIELD) * tau)
        strikes = strike_grid(float(forward[0]), float(atm[0]), float(tau[0]))
        is_call = np.repeat([False, True], strikes.size)
        strike = np.tile(strikes, 2)[:, None]
        call = is_call[:, None]

        log_m = np.log(strike / forward)
        iv = atm_smile_iv(atm, log_m, tau, SMILE)
        greeks = bs_greeks(spot, strike, tau, iv, RATE, DIVIDEND_YIELD, is_call=call)
        z = np.abs(standardized_atm_moneyness(atm, log_m, tau))
        intrinsic = np.exp(-RATE * tau) * np.maximum(
            np.where(call, forward - strike, strike - forward), 0.0
        )
        rng = _rng(weekly_code)
        half = half_spread(greeks["price"], greeks["vega"], z, tau, rng)
        bid, ask = bid_ask_ticks(greeks["price"], half, intrinsic, OPTION_TICKS)
        size = DAILY_TRADE_SIZE if history.daily else BAR_TRADE_SIZE
        volume, last = trades(z, bid, ask, rng, size)
        _, day_of_bar = np.unique(ts // _US_PER_DAY, return_inverse=True)
        interest = open_interest(z[:, 0], rng, int(day_of_bar.max()) + 1)

        option, bar = (i.ravel() for i in np.indices(bid.shape))
        types = np.where(is_call, "C", "P")
        symbols = [
            option_symbol(weekly_code, t, k)
            for t, k in zip(types, np.tile(strikes, 2).tolist(), strict=True)
        ]
        expires = _EPOCH + timedelta(microseconds=spec.expiry_us)
        quotes = pl.DataFrame(
            {
                "ts": pl.Series(ts[bar].astype("datetime64[us]")).dt.replace_time_zone("UTC"),
                "underlying_price": spot[bar],
                "option_symbol": pl.Series(symbols).gather(option),
                "option_type": types[option],
                "strike": strike[option, 0],
                "bid": bid[option, bar] / OPTION_TICKS,
                "ask": ask[option, bar] / OPTION_TICKS,
                "last": pl.Series(last[option, bar] / OPTION_TICKS, nan_to_null=True),
                "volume": volume[option, bar].astype(np.int64),
                "open_interest": interest[option, day_of_bar[bar]],
                "source_row": history.row[bars][bar],
            }
        ).sort("option_symbol", "ts")
        return quotes.with_columns(
            pl.lit(weekly_code).alias("weekly_code"),
            pl.lit(self.symbol).alias("underlying"),
            pl.lit("equity").alias("underlying_kind"),
            pl.lit(expires, dtype=UTC_TS).alias("expiry"),
            pl.lit(RATE).alias("rate"),
            pl.lit(DIVIDEND_YIELD).alias("dividend_yield"),
            pl.lit(history.file).alias("source_file"),
        ).select(RAW_COLUMNS + LINEAGE_COLUMNS)
