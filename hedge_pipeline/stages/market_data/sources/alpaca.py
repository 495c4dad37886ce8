"""The ``alpaca`` source: US equity options through alpaca-py (docs/design.md §4).

**Codes.** ``<SYMBOL>-<YYYY-MM-DD expiry>``, e.g. ``SPY-2026-11-27``. ``list_codes`` lists, for
each configured symbol, one expiry per calendar week within ``max_weeks``: the last listed
expiry of that week that has not expired yet (the Friday weekly, or Thursday when Friday is a
holiday). SPY and QQQ list an expiry every weekday; one per week keeps each partition a weekly
book. Any listed expiry can still be loaded by its code. Alpaca lists active contracts only, so
a code can no longer be loaded once it has expired; the warehouse keeps what was loaded.

**Calls** (alpaca-py 0.44), all for one symbol and expiry:

* contracts: ``TradingClient.get_option_contracts(GetOptionContractsRequest(...))``, paged by
  ``next_page_token``; standard contracts only (root symbol = the underlying: adjusted ones such
  as ``AAPL1`` deliver something other than 100 shares);
* option bars: ``OptionHistoricalDataClient.get_option_bars(OptionBarsRequest(...))`` at
  ``timeframe_minutes`` over the ``history_days`` before now (or before expiry, if earlier),
  100 contracts a request;
* stock bars: ``StockHistoricalDataClient.get_stock_bars(StockBarsRequest(...))``, same bars,
  unadjusted, feed ``stock_feed`` (``iex`` works with free keys; ``sip`` needs a subscription);
* latest quotes: ``OptionHistoricalDataClient.get_option_chain(OptionChainRequest(...))``.

**Bid and ask.** Alpaca serves no historical option quotes: only the latest quote (snapshots),
bars and trades. Each bar's close is ``last``, and bid/ask are that close widened by the
contract's relative spread in its latest snapshot quote: with ``s = (ask - bid) / mid``,
``bid = close·(1 - s/2)`` and ``ask = close·(1 + s/2)``, so the mid is the close. Contracts with
no usable latest quote (none, ask ≤ 0, or crossed) are left out, since no spread can be
derived. This is an approximation: real spreads move intraday and with moneyness. Free keys get
the ``indicative`` options feed, whose quotes Alpaca modifies; prefer the ``files`` source with
recorded quotes when spreads matter.

**Other columns.** ``underlying_price``: the stock bar close at the same time, else the latest
one before it (as-of backward join); option bars before the first stock bar are left out (no
price to join). ``option_type``, ``strike`` and ``expiry`` are parsed from the OCC symbol, which
is kept as ``option_symbol``; expiry is 16:00 America/New_York on the expiry date, in UTC.
``volume``: the bar's volume; ``open_interest``: the contract's latest reported open interest,
the same on every bar; ``rate`` and ``dividend_yield``: constructor parameters;
``underlying_kind``: ``'equity'``. Lineage: ``source_file`` = ``alpaca/<OCC symbol>``,
``source_row`` = the bar's 1-based position among that contract's bars.

**Fingerprint.** sha256 of the code, its number of contracts and their latest ``close_price_date``,
all from the contracts listing ``list_codes`` fetches anyway (no bar requests per code). It
changes once a trading day, when new closing prices (hence new bars) exist; bars added during
the day do not change it.

**Keys** go to the alpaca-py clients and nowhere else: not stored here, not in ``repr``, not in
errors. Failed calls raise ``AlpacaSourceError`` with the HTTP status and the server's message,
raised outside the ``except`` block so that the original error (whose request carries the key
headers) is not attached to the traceback.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import polars as pl
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.option import OptionHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.models.bars import Bar
from alpaca.data.requests import OptionBarsRequest, OptionChainRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.models import OptionContract
from alpaca.trading.requests import GetOptionContractsRequest

from hedge_pipeline.tables.schema import (
    LINEAGE_COLUMNS,
    RAW_COLUMNS,
    UTC_TS,
    ChainDataError,
    Location,
    UnknownWeeklyCodeError,
    check_weekly_code,
)

NEW_YORK = ZoneInfo("America/New_York")
EXPIRY_TIME = time(16, 0)  # US equity options stop trading at the 16:00 New York close
CONTRACTS_PAGE = 10_000  # the contracts endpoint's maximum page size
BAR_SYMBOLS_PER_REQUEST = 100  # the option bars endpoint takes at most 100 contracts
OCC_SYMBOL = re.compile(r"^(?P<root>[A-Z0-9]{1,6})(?P<date>\d{6})(?P<type>[CP])(?P<strike>\d{8})$")
CODE = re.compile(r"^(?P<symbol>.+)-(?P<expiry>\d{4}-\d{2}-\d{2})$")

T = TypeVar("T")


class AlpacaSourceError(RuntimeError):
    """An Alpaca call failed (HTTP status and server message; never the keys)."""


@dataclass(frozen=True)
class OccSymbol:
    """The fields of an OCC option symbol such as ``SPY261127C00600000``."""

    root: str
    expiry: date
    option_type: str
    strike: float


def parse_occ_symbol(symbol: str) -> OccSymbol:
    """Root, expiry date, 'C'/'P' and strike (the last 8 digits are thousandths of a dollar)."""
    match = OCC_SYMBOL.match(symbol)
    if match is None:
        raise ValueError(f"not an OCC option symbol: {symbol!r}")
    return OccSymbol(
        root=match["root"],
        expiry=datetime.strptime(match["date"], "%y%m%d").date(),
        option_type=match["type"],
        strike=int(match["strike"]) / 1000,
    )


def expiry_instant(expiry: date) -> datetime:
    """When an option expiring on ``expiry`` stops trading, in UTC."""
    return datetime.combine(expiry, EXPIRY_TIME, tzinfo=NEW_YORK).astimezone(UTC)


class AlpacaSource:
    """US equity option books from Alpaca, one weekly code per symbol and expiry."""

    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        symbols: Sequence[str],
        *,
        history_days: int = 5,
        timeframe_minutes: int = 5,
        max_weeks: int = 4,
        rate: float = 0.04,
        dividend_yield: float = 0.0,
        stock_feed: str = "iex",
        paper: bool = True,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``session`` replaces the HTTP session of the three alpaca-py clients (which offer no
        parameter for it), for a proxy or transport adapter; ``clock`` fixes "now" (tests)."""
        self.symbols = [s.upper() for s in symbols]
        for symbol in self.symbols:
            check_weekly_code(f"{symbol}-2000-01-01")
        self.history_days = history_days
        self.timeframe = TimeFrame(timeframe_minutes, TimeFrameUnit.Minute)
        self.max_weeks = max_weeks
        self.rate = rate
        self.dividend_yield = dividend_yield
        self.stock_feed = DataFeed(stock_feed)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._trading = TradingClient(api_key, secret_key, paper=paper)
        self._options = OptionHistoricalDataClient(api_key, secret_key)
        self._stocks = StockHistoricalDataClient(api_key, secret_key)
        if session is not None:
            for client in (self._trading, self._options, self._stocks):
                client._session = session

    def __repr__(self) -> str:
        return (
            f"AlpacaSource(symbols={self.symbols}, timeframe={self.timeframe}, "
            f"history_days={self.history_days}, max_weeks={self.max_weeks})"
        )

    def list_codes(self) -> dict[str, str]:
        now = self._clock()
        today = now.astimezone(NEW_YORK).date()
        codes: dict[str, str] = {}
        for symbol in self.symbols:
            contracts = self._contracts(
                symbol,
                expiration_date_gte=today,
                expiration_date_lte=today + timedelta(weeks=self.max_weeks),
            )
            for expiry, group in _weekly_expiries(contracts, now).items():
                code = f"{symbol}-{expiry.isoformat()}"
                codes[code] = _fingerprint(code, group)
        return codes

    def load(self, weekly_code: str) -> pl.DataFrame:
        parts = self._split_code(weekly_code)
        contracts = self._contracts(parts[0], expiration_date=parts[1]) if parts else []
        if not parts or not contracts:
            raise UnknownWeeklyCodeError(weekly_code, sorted(self.list_codes()))
        symbol, expiry = parts
        end = min(self._clock(), expiry_instant(expiry))
        start = end - timedelta(days=self.history_days)
        bars = self._option_bars([c.symbol for c in contracts], start, end)
        underlying = self._stock_bars(symbol, start, end)
        return _assemble(
            weekly_code,
            symbol,
            bars=bars,
            underlying=underlying,
            contracts=_contract_table(contracts),
            spreads=self._relative_spreads(symbol, expiry),
            rate=self.rate,
            dividend_yield=self.dividend_yield,
        )

    def _split_code(self, weekly_code: str) -> tuple[str, date] | None:
        """(symbol, expiry) of a code of one of this source's symbols, else None."""
        match = CODE.match(weekly_code)
        if match is None or match["symbol"] not in self.symbols:
            return None
        try:
            return match["symbol"], date.fromisoformat(match["expiry"])
        except ValueError:
            return None

    def _contracts(self, symbol: str, **expiration: date) -> list[OptionContract]:
        contracts: list[OptionContract] = []
        page_token: str | None = None
        while True:
            request = GetOptionContractsRequest(
                underlying_symbols=[symbol],
                limit=CONTRACTS_PAGE,
                page_token=page_token,
                **expiration,
            )
            page = _call("option contracts", self._trading.get_option_contracts, request)
            contracts += [c for c in page.option_contracts or [] if c.root_symbol == symbol]
            page_token = page.next_page_token
            if not page_token:
                return contracts

    def _option_bars(self, symbols: list[str], start: datetime, end: datetime) -> pl.DataFrame:
        """Bars of every contract: option_symbol, source_row (position), ts, last, volume."""
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(symbols), BAR_SYMBOLS_PER_REQUEST):
            request = OptionBarsRequest(
                symbol_or_symbols=symbols[i : i + BAR_SYMBOLS_PER_REQUEST],
                timeframe=self.timeframe,
                start=start,
                end=end,
            )
            barset = _call("option bars", self._options.get_option_bars, request)
            for contract, bars in barset.data.items():
                rows += [(contract, n, *_bar_fields(b)) for n, b in enumerate(bars, start=1)]
        schema = {
            "option_symbol": pl.String,
            "source_row": pl.Int64,
            "ts": UTC_TS,
            "last": pl.Float64,
            "volume": pl.Float64,
        }
        return pl.DataFrame(rows, schema=schema, orient="row")

    def _stock_bars(self, symbol: str, start: datetime, end: datetime) -> pl.DataFrame:
        request = StockBarsRequest(
            symbol_or_symbols=symbol,
            timeframe=self.timeframe,
            start=start,
            end=end,
            feed=self.stock_feed,
            adjustment=Adjustment.RAW,
        )
        barset = _call("stock bars", self._stocks.get_stock_bars, request)
        rows = [_bar_fields(b)[:2] for b in barset.data.get(symbol, [])]
        return pl.DataFrame(
            rows, schema={"ts": UTC_TS, "underlying_price": pl.Float64}, orient="row"
        ).sort("ts")

    def _relative_spreads(self, symbol: str, expiry: date) -> pl.DataFrame:
        """(ask - bid) / mid of each contract's latest quote, where that quote is usable."""
        request = OptionChainRequest(underlying_symbol=symbol, expiration_date=expiry)
        chain = _call("option chain", self._options.get_option_chain, request)
        quotes = [
            (contract, snap.latest_quote.bid_price, snap.latest_quote.ask_price)
            for contract, snap in chain.items()
            if snap.latest_quote is not None
        ]
        schema = {"option_symbol": pl.String, "bid": pl.Float64, "ask": pl.Float64}
        frame = pl.DataFrame(quotes, schema=schema, orient="row")
        return frame.filter(
            (pl.col("ask") > 0) & (pl.col("bid") >= 0) & (pl.col("ask") >= pl.col("bid"))
        ).select(
            "option_symbol",
            rel_spread=(pl.col("ask") - pl.col("bid")) / ((pl.col("ask") + pl.col("bid")) / 2),
        )


def _call(what: str, method: Callable[[Any], T], request: Any) -> T:
    """``method(request)``; failures become AlpacaSourceError without the original attached."""
    try:
        return method(request)
    except APIError as exc:
        failure = AlpacaSourceError(
            f"Alpaca {what} request failed: HTTP {exc.status_code}: {str(exc)[:300]}"
        )
    except requests.RequestException as exc:
        failure = AlpacaSourceError(
            f"Alpaca {what} request failed: {type(exc).__name__}: {str(exc)[:300]}"
        )
    raise failure


def _bar_fields(bar: Bar) -> tuple[datetime, float, float]:
    return bar.timestamp, bar.close, bar.volume


def _weekly_expiries(
    contracts: list[OptionContract], now: datetime
) -> dict[date, list[OptionContract]]:
    """The last unexpired expiry of each ISO week, with its contracts."""
    live: dict[date, list[OptionContract]] = {}
    for contract in contracts:
        if expiry_instant(contract.expiration_date) > now:
            live.setdefault(contract.expiration_date, []).append(contract)
    last_of_week = {expiry.isocalendar()[:2]: expiry for expiry in sorted(live)}
    return {expiry: live[expiry] for expiry in sorted(last_of_week.values())}


def _fingerprint(code: str, contracts: list[OptionContract]) -> str:
    closes = [c.close_price_date for c in contracts if c.close_price_date is not None]
    latest = max(closes).isoformat() if closes else "-"
    return hashlib.sha256(f"{code}|{len(contracts)}|{latest}".encode()).hexdigest()


def _contract_table(contracts: list[OptionContract]) -> pl.DataFrame:
    """Per contract: option_type, strike, expiry (from the OCC symbol) and open interest."""
    rows = []
    for contract in contracts:
        try:
            occ = parse_occ_symbol(contract.symbol)
        except ValueError as exc:
            raise ChainDataError(
                Location(f"alpaca/{contract.symbol}", column="option_symbol"), str(exc)
            ) from None
        open_interest = int(contract.open_interest) if contract.open_interest else None
        rows.append(
            (
                contract.symbol,
                occ.option_type,
                occ.strike,
                expiry_instant(occ.expiry),
                open_interest,
            )
        )
    schema = {
        "option_symbol": pl.String,
        "option_type": pl.String,
        "strike": pl.Float64,
        "expiry": UTC_TS,
        "open_interest": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


def _assemble(
    weekly_code: str,
    symbol: str,
    *,
    bars: pl.DataFrame,
    underlying: pl.DataFrame,
    contracts: pl.DataFrame,
    spreads: pl.DataFrame,
    rate: float,
    dividend_yield: float,
) -> pl.DataFrame:
    """Bars joined with their contract, spread and underlying price, in the canonical schema."""
    half_spread = pl.col("rel_spread") / 2
    return (
        bars.join(contracts, on="option_symbol", how="inner")
        .join(spreads, on="option_symbol", how="inner")
        .sort("ts")
        .join_asof(underlying, on="ts", strategy="backward")
        .filter(pl.col("underlying_price").is_not_null())
        .with_columns(
            weekly_code=pl.lit(weekly_code),
            underlying=pl.lit(symbol),
            underlying_kind=pl.lit("equity"),
            bid=pl.col("last") * (1 - half_spread),
            ask=pl.col("last") * (1 + half_spread),
            volume=pl.col("volume").round().cast(pl.Int64),
            rate=pl.lit(rate, pl.Float64),
            dividend_yield=pl.lit(dividend_yield, pl.Float64),
            source_file=pl.format("alpaca/{}", "option_symbol"),
        )
        .select(RAW_COLUMNS + LINEAGE_COLUMNS)
        .sort("option_symbol", "ts")
    )
