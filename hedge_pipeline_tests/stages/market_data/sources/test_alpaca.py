"""The Alpaca source against recorded responses: alpaca-py builds and parses, nothing leaves.

The recordings in ``alpaca_recordings/`` have the shapes of Alpaca's real responses (from its
API reference and alpaca-py's models). A ``requests`` transport adapter serves them, so the
real request building, pagination and response parsing of alpaca-py run unchanged; a request
without a recording fails the test instead of reaching the network.
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest
import requests

from hedge_pipeline.stages.market_data.sources.alpaca import (
    AlpacaSource,
    AlpacaSourceError,
    parse_occ_symbol,
)
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.tables.schema import (
    LINEAGE_SCHEMA,
    RAW_SCHEMA,
    UnknownWeeklyCodeError,
)

RECORDINGS = Path(__file__).parent / "alpaca_recordings"
API_KEY = "PKTESTKEY0123456789AB"
SECRET_KEY = "s3cr3tTESTsecret0123456789abcdefghijklmn"
NOW = datetime(2026, 11, 20, 21, 30, tzinfo=UTC)  # Friday, after the close


class RecordedAlpaca(requests.adapters.BaseAdapter):
    """Answers each request with the recording whose URL matches and whose recorded query
    parameters are all present with the same values (the most specific such recording)."""

    def __init__(self) -> None:
        super().__init__()
        self.recordings = [json.loads(p.read_text()) for p in sorted(RECORDINGS.glob("*.json"))]
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.sent.append(request)
        parts = urlsplit(request.url)
        url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        matches = [
            r
            for r in self.recordings
            if r["request"]["method"] == request.method
            and r["request"]["url"] == url
            and r["request"]["query"].items() <= query.items()
        ]
        if not matches:
            raise requests.ConnectionError(f"no recording for {request.method} {request.url}")
        recording = max(matches, key=lambda r: len(r["request"]["query"]))
        response = requests.Response()
        response.status_code = recording["response"]["status"]
        response._content = json.dumps(recording["response"]["json"]).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def recorded() -> RecordedAlpaca:
    return RecordedAlpaca()


def make_source(adapter: RecordedAlpaca, symbols: list[str] | None = None) -> AlpacaSource:
    session = requests.Session()
    session.mount("https://", adapter)
    return AlpacaSource(API_KEY, SECRET_KEY, symbols or ["SPY"], session=session, clock=lambda: NOW)


def test_list_codes_one_unexpired_expiry_per_week(recorded: RecordedAlpaca) -> None:
    codes = make_source(recorded).list_codes()
    # 2026-11-20 expired at 21:00 UTC; 11-23 and 11-25 share a week with 11-27; 12-02 with 12-04.
    assert sorted(codes) == ["SPY-2026-11-27", "SPY-2026-12-04"]
    assert all(len(fp) == 64 for fp in codes.values())
    assert codes == make_source(RecordedAlpaca()).list_codes()  # stable across calls
    assert len(recorded.sent) == 2  # both pages of the contracts listing, nothing per code


def test_load_gives_canonical_frame(recorded: RecordedAlpaca) -> None:
    df = make_source(recorded).load("SPY-2026-11-27")
    assert df.schema == pl.Schema(RAW_SCHEMA | LINEAGE_SCHEMA)
    # C605 has no usable latest quote; P595's 14:25 bar precedes the first stock bar.
    assert df.group_by("option_symbol").len().sort("option_symbol").rows() == [
        ("SPY261127C00600000", 3),
        ("SPY261127P00595500", 1),
        ("SPY261127P00600000", 3),
    ]
    assert df["option_symbol"].to_list() == sorted(df["option_symbol"].to_list())
    assert set(df["weekly_code"]) == {"SPY-2026-11-27"}
    assert set(df["underlying"]) == {"SPY"}
    assert set(df["underlying_kind"]) == {"equity"}
    assert set(df["rate"]) == {0.04}
    assert set(df["dividend_yield"]) == {0.0}
    assert validate_chain(df).valid.height == df.height


def test_load_parses_occ_symbols(recorded: RecordedAlpaca) -> None:
    df = make_source(recorded).load("SPY-2026-11-27")
    put = df.filter(pl.col("option_symbol") == "SPY261127P00595500").row(0, named=True)
    assert (put["option_type"], put["strike"]) == ("P", 595.5)
    # 16:00 New York on 2026-11-27 (EST) is 21:00 UTC.
    assert set(df["expiry"]) == {datetime(2026, 11, 27, 21, 0, tzinfo=UTC)}
    assert set(df.filter(pl.col("option_type") == "C")["strike"]) == {600.0}
    occ = parse_occ_symbol("SPY261127C00600000")
    assert (occ.root, occ.expiry.isoformat(), occ.option_type, occ.strike) == (
        "SPY",
        "2026-11-27",
        "C",
        600.0,
    )
    with pytest.raises(ValueError, match="not an OCC option symbol"):
        parse_occ_symbol("SPY-2026-11-27")


def test_load_bid_ask_from_latest_spread_and_asof_underlying(recorded: RecordedAlpaca) -> None:
    df = make_source(recorded).load("SPY-2026-11-27")
    call = df.filter(pl.col("option_symbol") == "SPY261127C00600000").row(0, named=True)
    # Latest quote 4.90/5.10: relative spread 0.04 around the bar close 5.00.
    assert call["last"] == 5.0
    assert call["bid"] == pytest.approx(4.9)
    assert call["ask"] == pytest.approx(5.1)
    assert (call["volume"], call["open_interest"]) == (12, 15234)
    assert call["underlying_price"] == 600.1
    put = df.filter(pl.col("option_symbol") == "SPY261127P00595500").row(0, named=True)
    # Bar at 14:45, no stock bar then: the 14:40 close is the latest at or before it.
    assert put["ts"] == datetime(2026, 11, 20, 14, 45, tzinfo=UTC)
    assert put["underlying_price"] == 599.8
    # Lineage: the contract and the bar's position among its bars (across result pages).
    assert (put["source_file"], put["source_row"]) == ("alpaca/SPY261127P00595500", 2)
    p600 = df.filter(pl.col("option_symbol") == "SPY261127P00600000")
    assert p600["source_row"].to_list() == [1, 2, 3]


def test_requests_carry_keys_as_headers_only(recorded: RecordedAlpaca) -> None:
    make_source(recorded).load("SPY-2026-11-27")
    hosts = {urlsplit(r.url).netloc for r in recorded.sent}
    assert hosts == {"paper-api.alpaca.markets", "data.alpaca.markets"}
    for request in recorded.sent:
        assert request.headers["APCA-API-KEY-ID"] == API_KEY
        assert API_KEY not in request.url and SECRET_KEY not in request.url


def test_unknown_codes(recorded: RecordedAlpaca) -> None:
    source = make_source(recorded)
    for code in ("SPY-2026-12-25", "AAPL-2026-11-27", "SPY-2026-13-45", "nonsense"):
        with pytest.raises(UnknownWeeklyCodeError, match="SPY-2026-11-27"):
            source.load(code)


def test_keys_never_in_errors_or_repr(recorded: RecordedAlpaca) -> None:
    source = make_source(recorded, ["QQQ"])
    with pytest.raises(AlpacaSourceError, match="HTTP 403") as caught:
        source.list_codes()
    rendered = [
        repr(source),
        str(caught.value),
        repr(caught.value),
        "".join(traceback.format_exception(caught.value)),
    ]
    for text in rendered:
        assert API_KEY not in text and SECRET_KEY not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_unrecorded_request_is_an_error_not_a_network_call(recorded: RecordedAlpaca) -> None:
    with pytest.raises(AlpacaSourceError, match="ConnectionError"):
        make_source(recorded, ["IWM"]).list_codes()
