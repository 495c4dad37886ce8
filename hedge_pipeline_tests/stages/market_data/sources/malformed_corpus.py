"""Drops of raw option files with exactly one defect each, shared by the source and asset tests.

Each ``Case`` writes a small drop into ``root/<code>/`` that would load and validate cleanly but
for one defect, and says where the error must point (``file`` inside the code's folder, ``row``,
``column``) and a substring of its message (``expect``). The same corpus serves two levels:
``FilesSource(root).load(code)`` followed by ``validate_chain(df, policy="reject")`` must raise
``ChainDataError`` at that location, and so must materializing ``raw_option_chains``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

Files = dict[str, bytes]

CONTRACT = {
    "underlying": "ZC",
    "underlying_kind": "future",
    "expiry": "2025-07-03T18:20:00Z",
    "rate": 0.045,
}
UNDERLYING_CSV = """ts,price
2025-06-30T14:00:00Z,111.20
2025-06-30T14:05:00Z,111.40
2025-06-30T14:10:00Z,111.30
"""
CALL_CSV = """ts,price,bid,ask,volume
2025-06-30T14:00:00Z,1.20,1.15,1.25,10
2025-06-30T14:05:00Z,1.30,1.25,1.35,4
2025-06-30T14:10:00Z,1.25,1.20,1.30,0
"""
PUT_CSV = """ts,price
2025-06-30T14:00:00Z,0.80
2025-06-30T14:05:00Z,0.75
2025-06-30T14:10:00Z,0.78
"""
CANONICAL_HEADER = (
    "weekly_code,ts,underlying,underlying_kind,underlying_price,option_symbol,option_type,"
    "strike,expiry,bid,ask,last,volume,open_interest,rate,dividend_yield"
)
# Rows 1-2: one call; rows 3-4: one put. {code} is the folder's weekly code.
CANONICAL_ROWS = [
    "{code},2025-06-30T14:00:00Z,ZC,future,111.2,{code}_C111.5,C,111.5,2025-07-03T18:20:00Z,"
    "1.15,1.25,1.2,10,120,0.045,0.0",
    "{code},2025-06-30T14:05:00Z,ZC,future,111.4,{code}_C111.5,C,111.5,2025-07-03T18:20:00Z,"
    "1.25,1.35,1.3,4,120,0.045,0.0",
    "{code},2025-06-30T14:00:00Z,ZC,future,111.2,{code}_P110,P,110,2025-07-03T18:20:00Z,"
    "0.75,0.85,,,80,0.045,0.0",
    "{code},2025-06-30T14:05:00Z,ZC,future,111.4,{code}_P110,P,110,2025-07-03T18:20:00Z,"
    "0.70,0.80,0.75,2,80,0.045,0.0",
]


def per_option_drop(code: str) -> Files:
    """A valid per-option drop: contract.json, underlying.csv, one call (bid/ask), one put."""
    return {
        "contract.json": json.dumps(CONTRACT).encode(),
        "underlying.csv": UNDERLYING_CSV.encode(),
        "CALL_111.5.csv": CALL_CSV.encode(),
        "PUT_110.0.csv": PUT_CSV.encode(),
    }


def canonical_csv(code: str, rows: list[str] | None = None) -> str:
    lines = [CANONICAL_HEADER] + [r.format(code=code) for r in rows or CANONICAL_ROWS]
    return "\n".join(lines) + "\n"


def canonical_drop(code: str) -> Files:
    """A valid canonical long-format drop: ``chain.csv`` with two options, two quotes each."""
    return {"chain.csv": canonical_csv(code).encode()}


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def to_parquet(csv_text: str) -> bytes:
    """The CSV's table as Parquet, with the types Polars infers (timestamps as timestamps)."""
    return parquet_bytes(pl.read_csv(io.StringIO(csv_text), try_parse_dates=True))


def replace_line(text: str, line: int, new: str) -> str:
    """``text`` with its ``line``-th line (1-based; line 1 is the header) replaced."""
    lines = text.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One defect: how to write it, and where and how the error must report it."""

    build: Callable[[str], Files]  # code -> {file name: content}
    expect: str  # substring of the error message
    file: str  # the file the error names, relative to the code's folder
    row: int | None = None  # 1-based data row the error names (None: the whole file)
    column: str | None = None  # column (or contract key) the error names

    def write(self, root: Path, code: str) -> None:
        folder = root / code
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.build(code).items():
            (folder / name).write_bytes(content)


def _per_option(**changes: bytes | None) -> Callable[[str], Files]:
    """The valid per-option drop with files replaced (bytes) or removed (None)."""

    def build(code: str) -> Files:
        files = per_option_drop(code)
        for name, content in changes.items():
            files.pop(name, None)
            if content is not None:
                files[name] = content
        return files

    return build


def _renamed(old: str, new: str) -> Callable[[str], Files]:
    def build(code: str) -> Files:
        files = per_option_drop(code)
        files[new] = files.pop(old)
        return files

    return build


def _canonical(rows: dict[int, str], *, parquet: bool = False) -> Callable[[str], Files]:
    """The valid canonical drop with rows replaced ({row: csv line}, rows 1-based)."""

    def build(code: str) -> Files:
        text = canonical_csv(code)
        for row, line in rows.items():
            text = replace_line(text, row + 1, line.format(code=code))
        if parquet:
            return {"chain.parquet": to_parquet(text)}
        return {"chain.csv": text.encode()}

    return build


def _truncated_parquet(code: str) -> Files:
    content = to_parquet(canonical_csv(code))
    return {"chain.parquet": content[: len(content) // 2]}


CALL = "CALL_111.5.csv"
PUT = "PUT_110.0.csv"

CASES: dict[str, Case] = {
    "missing_column": Case(
        _per_option(**{PUT: b"ts\n2025-06-30T14:00:00Z\n"}),
        "missing required column",
        PUT,
        column="price",
    ),
    "missing_canonical_column": Case(
        lambda code: {"chain.csv": canonical_csv(code).replace(",ask,", ",asking,").encode()},
        "missing required column of the canonical layout",
        "chain.csv",
        column="ask",
    ),
    "text_in_price_column": Case(
        _per_option(**{PUT: replace_line(PUT_CSV, 3, "2025-06-30T14:05:00Z,abc").encode()}),
        "not a number: 'abc'",
        PUT,
        row=2,
        column="price",
    ),
    "text_in_parquet_price_column": Case(
        _per_option(
            **{
                PUT: None,
                "PUT_110.0.parquet": parquet_bytes(
                    pl.DataFrame(
                        {
                            "ts": ["2025-06-30T14:00:00Z", "2025-06-30T14:05:00Z"],
                            "price": ["0.8", "n/a"],
                        }
                    )
                ),
            }
        ),
        "not a number: 'n/a'",
        "PUT_110.0.parquet",
        row=2,
        column="price",
    ),
    "nan_price": Case(
        _per_option(
            **{CALL: replace_line(CALL_CSV, 3, "2025-06-30T14:05:00Z,1.30,NaN,1.35,4").encode()}
        ),
        "missing or non-finite bid",
        CALL,
        row=2,
        column="bid",
    ),
    "bid_above_ask": Case(
        _per_option(
            **{CALL: replace_line(CALL_CSV, 3, "2025-06-30T14:05:00Z,1.30,1.40,1.35,4").encode()}
        ),
        "crossed quote",
        CALL,
        row=2,
        column="bid",
    ),
    "price_above_static_bound": Case(
        _per_option(
            **{CALL: replace_line(CALL_CSV, 3, "2025-06-30T14:05:00Z,1.30,1.25,1e308,4").encode()}
        ),
        "ask 1e+308 is more than 10% above the static bound 111.4: a call is worth at most the "
        "underlying price",
        CALL,
        row=2,
        column="ask",
    ),
    "negative_price": Case(
        _per_option(**{PUT: replace_line(PUT_CSV, 2, "2025-06-30T14:00:00Z,-0.80").encode()}),
        "negative price",
        PUT,
        row=1,
        column="bid",
    ),
    "duplicate_rows": Case(
        _per_option(**{CALL: (CALL_CSV + "2025-06-30T14:10:00Z,1.25,1.20,1.30,0\n").encode()}),
        "duplicate quote",
        CALL,
        row=4,
        column="ts",
    ),
    "unparseable_timestamp": Case(
        _per_option(**{PUT: replace_line(PUT_CSV, 3, "30/06/2025 14:05,0.75").encode()}),
        "not an ISO-8601 timestamp: '30/06/2025 14:05'",
        PUT,
        row=2,
        column="ts",
    ),
    "quote_after_expiry": Case(
        _per_option(**{PUT: replace_line(PUT_CSV, 4, "2025-07-04T14:10:00Z,0.01").encode()}),
        "after expiry",
        PUT,
        row=3,
        column="ts",
    ),
    "empty_file": Case(_per_option(**{PUT: b""}), "empty file", PUT),
    "header_only_file": Case(_per_option(**{PUT: b"ts,price\n"}), "no data rows", PUT),
    "non_utf8_bytes": Case(
        _per_option(**{PUT: PUT_CSV.encode().replace(b"0.75", b"0.7\xe95")}),
        "not UTF-8",
        PUT,
        row=2,
    ),
    "unknown_option_type_in_file_name": Case(
        _renamed(PUT, "STRADDLE_110.0.csv"),
        "unknown option type 'STRADDLE' in file name",
        "STRADDLE_110.0.csv",
    ),
    "unknown_option_type_in_long_format": Case(
        _canonical(
            {
                3: CANONICAL_ROWS[2].replace(",P,", ",X,"),
                4: CANONICAL_ROWS[3].replace(",P,", ",X,"),
            }
        ),
        "unknown option type X",
        "chain.csv",
        row=3,
        column="option_type",
    ),
    "strike_not_positive": Case(
        _renamed(CALL, "CALL_0.csv"), "must be > 0", "CALL_0.csv", row=1, column="strike"
    ),
    "malformed_contract_json": Case(
        _per_option(**{"contract.json": b'{"underlying": "ZC", "expiry": '}),
        "malformed JSON",
        "contract.json",
    ),
    "contract_value_of_wrong_type": Case(
        _per_option(**{"contract.json": json.dumps(CONTRACT | {"rate": "4.5%"}).encode()}),
        "expected a number",
        "contract.json",
        column="rate",
    ),
    "missing_contract_json": Case(
        _per_option(**{"contract.json": None}), "need a contract.json", "contract.json"
    ),
    "missing_underlying_file": Case(
        _per_option(**{"underlying.csv": None}), "need underlying.csv", "underlying.csv"
    ),
    "no_underlying_price_before_quote": Case(
        _per_option(**{"underlying.csv": b"ts,price\n2025-06-30T14:05:00Z,111.40\n"}),
        "no underlying price at or before",
        CALL,
        row=1,
        column="ts",
    ),
    "weekly_code_not_the_folder": Case(
        _canonical({2: CANONICAL_ROWS[1].replace("{code}", "OTHER_CODE", 1)}),
        "does not match the folder",
        "chain.csv",
        row=2,
        column="weekly_code",
    ),
    "truncated_parquet": Case(_truncated_parquet, "unreadable Parquet file", "chain.parquet"),
}
