"""The ``files`` source: CSV or Parquet drops under ``data/raw/<weekly_code>/`` (docs/design.md §4).

Each non-hidden folder of the raw directory whose name is a valid weekly code and which holds
at least one data file is a code. A folder may hold either layout, or both (rows are
concatenated):

(a) **Canonical long format**: any ``*.csv`` / ``*.parquet`` with an ``option_symbol`` column.
    It must carry every column of ``RAW_SCHEMA`` except ``last``, ``volume``,
    ``open_interest`` (absent: null) and ``dividend_yield`` (absent: 0.0); extra columns are
    ignored. Its ``weekly_code`` column must equal the folder name.
(b) **Per-option layout**, the one researchers keep by hand:
    ``CALL_<strike>.csv`` / ``PUT_<strike>.csv`` (or ``.parquet``) with ``ts, price`` and
    optionally ``bid, ask, volume, open_interest``; ``underlying.csv`` (or ``.parquet``) with
    ``ts, price``; ``contract.json`` with ``underlying``, ``underlying_kind``, ``expiry``,
    ``rate`` and optionally ``dividend_yield`` (default 0.0).

Conventions (what a drop means, so that two researchers' files load alike):

* **Timestamps**: ISO-8601 text (``2024-06-03``, ``2024-06-03T14:30``, ``2024-06-03 14:30:00.5``,
  with an optional ``Z`` or ``±HH:MM`` offset) or Parquet timestamp/date columns. A timestamp
  without an offset is taken to be UTC; one with an offset is converted to UTC; a bare date
  means 00:00 UTC (so write an expiry's time of day explicitly).
* **No bid/ask**: a per-option file without ``bid``/``ask`` records one price per timestamp;
  it is used as both bid and ask (a zero spread, so the mid is that price). ``last`` is always
  the file's ``price``. ``bid`` and ``ask`` come together or not at all.
* **Underlying price**: joined on the exact timestamp, else the latest underlying price before
  it (an as-of backward join, never a later price: no look-ahead). A quote with no underlying
  price at or before it is an error naming the option file and row.
* Column headers are trimmed and lower-cased; files with other suffixes are ignored.

Parsing problems (unreadable, empty or non-UTF-8 file, missing column, text where a number
belongs, unparseable timestamp, malformed ``contract.json``, unknown option type in a file name)
raise ``ChainDataError`` naming file, row and column; nothing is returned half-read. Values that
parse but break a rule (NaN, negative, crossed, duplicated, after expiry) are kept as they are
for ``market_data.validation`` to judge, with ``source_file`` (relative to the raw directory) and
``source_row`` (1-based data row: the CSV line number minus the header, the Parquet row) intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import polars as pl

from hedge_pipeline.runtime import paths
from hedge_pipeline.tables.schema import (
    LINEAGE_SCHEMA,
    RAW_COLUMNS,
    RAW_SCHEMA,
    UTC_TS,
    ChainDataError,
    Location,
    UnknownWeeklyCodeError,
    check_weekly_code,
    option_symbol,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE_SUFFIXES = (".csv", ".parquet")
CONTRACT_FILE = "contract.json"
UNDERLYING_STEM = "underlying"
OPTION_TYPE_TOKENS = {"CALL": "C", "PUT": "P"}
# Canonical columns a file may leave out, and the value they then take.
CANONICAL_DEFAULTS: dict[str, float | None] = {
    "last": None,
    "volume": None,
    "open_interest": None,
    "dividend_yield": 0.0,
}
CONTRACT_KEYS = {"underlying", "underlying_kind", "expiry", "rate", "dividend_yield"}
FRAME_SCHEMA = RAW_SCHEMA | LINEAGE_SCHEMA

_PER_OPTION_NAME = re.compile(r"^(?P<token>[A-Za-z]+)_(?P<strike>.+)$")
# Accepted timestamp spellings, tried in turn after normalising 'Z' and the date/time separator.
_TS_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)


class FilesSource:
    """Weekly option books dropped as files, one folder per weekly code (see module docs)."""

    name = "files"

    def __init__(self, root: Path | None = None) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        """The raw directory, read when used so that ``HEDGE_DATA_DIR`` changes are followed."""
        return Path(self._root) if self._root is not None else paths.raw_dir()

    def list_codes(self) -> dict[str, str]:
        """Each code with a sha256 over its data files' names and contents (not their mtimes)."""
        return {code: _fingerprint(self.root / code) for code in self._codes()}

    def load(self, weekly_code: str) -> pl.DataFrame:
        codes = self._codes()
        if weekly_code not in codes:
            raise UnknownWeeklyCodeError(weekly_code, codes)
        return _load_folder(self.root, weekly_code)

    def _codes(self) -> list[str]:
        if not self.root.is_dir():
            return []
        codes = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                check_weekly_code(folder.name)
            except ValueError as exc:
                log.warning("skipping folder %s: %s", folder, exc)
                continue
            if _data_files(folder):
                codes.append(folder.name)
        return codes


def _data_files(folder: Path) -> list[Path]:
    """The files a code's data consists of: what ``load`` reads and the fingerprint covers."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and (p.suffix.lower() in TABLE_SUFFIXES or p.name == CONTRACT_FILE)
    )


def _fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in _data_files(folder):
        with path.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").digest()
        digest.update(path.name.encode() + b"\0" + content)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class _Table:
    """One data file read as it is: ``file`` relative to the raw directory, headers normalised.

    Compared by identity: the layouts are told apart by sorting the same objects into lists.
    """

    file: str
    stem: str
    frame: pl.DataFrame


@dataclass(frozen=True)
class _Contract:
    underlying: str
    underlying_kind: str
    expiry: datetime
    rate: float
    dividend_yield: float


def _load_folder(root: Path, code: str) -> pl.DataFrame:
    folder = root / code
    files = _data_files(folder)
    tables = [_read_table(root, p) for p in files if p.suffix.lower() in TABLE_SUFFIXES]
    canonical = [t for t in tables if "option_symbol" in t.frame.columns]
    underlying = [t for t in tables if t not in canonical and t.stem == UNDERLYING_STEM]
    options = [t for t in tables if t not in canonical and t not in underlying]
    frames = [_canonical_frame(t, code) for t in canonical]
    if options:
        # A file of neither layout (say, a canonical file that lost its option_symbol column)
        # is the problem to name, not the contract.json the per-option layout would need.
        for table in options:
            _option_identity(table)
        contract = _read_contract(root, folder / CONTRACT_FILE)
        prices = _underlying_prices(code, underlying)
        frames += [_option_frame(t, code, contract, prices) for t in options]
    if not frames:
        raise ChainDataError(
            Location(code),
            "no option quotes: expected canonical files or CALL_<strike>/PUT_<strike> files",
        )
    return pl.concat(frames).sort("option_symbol", "ts", "source_file", "source_row")


def _read_table(root: Path, path: Path) -> _Table:
    file = path.relative_to(root).as_posix()
    is_csv = path.suffix.lower() == ".csv"
    try:
        frame = read_csv_text(path, file) if is_csv else pl.read_parquet(path)
        frame = frame.rename(lambda c: c.strip().lower())
    except pl.exceptions.PolarsError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise ChainDataError(
            Location(file), f"unreadable {'CSV' if is_csv else 'Parquet'} file: {detail}"
        ) from exc
    if frame.height == 0:
        raise ChainDataError(Location(file), "empty file: no data rows")
    return _Table(file, path.stem, frame)


def read_csv_text(path: Path, file: str) -> pl.DataFrame:
    """All columns as text: types are decided per column so that errors can name the row
    (the ``history`` source reads its CSVs the same way)."""
    data = path.read_bytes()
    if not data.strip():
        raise ChainDataError(Location(file), "empty file: no header and no data rows")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ChainDataError(
            Location(file, row=line - 1 if line > 1 else None),
            f"not UTF-8: byte 0x{data[exc.start]:02x} on line {line}",
        ) from None
    return pl.read_csv(io.StringIO(text), infer_schema=False)


def _column(table: _Table, column: str) -> pl.Series:
    if column not in table.frame.columns:
        raise ChainDataError(Location(table.file, column=column), "missing required column")
    return table.frame.get_column(column)


def _parse(table: _Table, column: str, dtype: pl.DataType) -> pl.Series:
    """The column converted to ``dtype``; a value that does not convert is a ChainDataError."""
    raw = _column(table, column)
    convert, expected = _CONVERTERS.get(dtype, (_to_text, "text"))
    parsed = convert(raw).alias(column)
    _raise_first(table, column, parsed.is_null() & raw.is_not_null(), raw, f"not {expected}")
    return parsed


def _raise_first(table: _Table, column: str, bad: pl.Series, raw: pl.Series, reason: str) -> None:
    rows = bad.arg_true()
    if rows.len():
        first = rows[0]
        raise ChainDataError(
            Location(table.file, first + 1, column),
            f"{reason}: {raw[first]!r}",
            more=rows.len() - 1,
        )


def to_float(raw: pl.Series) -> pl.Series:
    """Numbers; text is trimmed first; what does not parse (or another type) becomes null."""
    if raw.dtype == pl.String:
        return raw.str.strip_chars().cast(pl.Float64, strict=False)
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64)
    return pl.Series(raw.name, [None] * raw.len(), pl.Float64)


def _to_int(raw: pl.Series) -> pl.Series:
    """Integers, also when spelled ``12.0``; a fractional or non-finite value does not convert."""
    values = to_float(raw)
    integral = values.is_finite() & (values == values.round())
    return pl.select(pl.when(integral).then(values).cast(pl.Int64, strict=False)).to_series()


def to_utc(raw: pl.Series) -> pl.Series:
    """UTC timestamps (see the module's conventions); what does not parse becomes null."""
    if isinstance(raw.dtype, pl.Datetime):
        if raw.dtype.time_zone is None:
            return raw.dt.replace_time_zone("UTC").cast(UTC_TS)
        return raw.dt.convert_time_zone("UTC").cast(UTC_TS)
    if raw.dtype == pl.Date:
        return raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if raw.dtype != pl.String:
        return pl.Series(raw.name, [None] * raw.len(), UTC_TS)
    text = (
        raw.str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
        .str.replace(r"[Zz]$", "+00:00")
    )
    attempts = [
        text.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
        for fmt in _TS_FORMATS
    ]
    return pl.select(pl.coalesce(attempts)).to_series()


def _to_text(raw: pl.Series) -> pl.Series:
    return raw.cast(pl.String)


_CONVERTERS: dict[pl.DataType, tuple[Callable[[pl.Series], pl.Series], str]] = {
    pl.Float64(): (to_float, "a number"),
    pl.Int64(): (_to_int, "an integer"),
    UTC_TS: (to_utc, "an ISO-8601 timestamp"),
}


def _lineage(table: _Table) -> list[pl.Series]:
    n = table.frame.height
    return [
        pl.Series("source_file", [table.file] * n, pl.String),
        pl.Series("source_row", range(1, n + 1), pl.Int64),
    ]


def _canonical_frame(table: _Table, code: str) -> pl.DataFrame:
    missing = [
        c for c in RAW_COLUMNS if c not in table.frame.columns and c not in CANONICAL_DEFAULTS
    ]
    if missing:
        others = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ChainDataError(
            Location(table.file, column=missing[0]),
            f"missing required column of the canonical layout{others}",
        )
    n = table.frame.height
    columns = [
        _parse(table, c, dtype)
        if c in table.frame.columns
        else pl.Series(c, [CANONICAL_DEFAULTS[c]] * n, dtype)
        for c, dtype in RAW_SCHEMA.items()
    ]
    frame = pl.DataFrame(columns + _lineage(table))
    codes = frame.get_column("weekly_code")
    _raise_first(
        table,
        "weekly_code",
        codes.ne_missing(code),
        codes,
        f"weekly_code does not match the folder {code!r}",
    )
    return frame


def _read_contract(root: Path, path: Path) -> _Contract:
    file = path.relative_to(root).as_posix()
    if not path.is_file():
        raise ChainDataError(
            Location(file),
            "missing: CALL_/PUT_ files need a contract.json with "
            "underlying, underlying_kind, expiry and rate",
        )
    try:
        spec = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ChainDataError(Location(file), f"not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise ChainDataError(
            Location(file), f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(spec, dict):
        raise ChainDataError(Location(file), "malformed contract: expected a JSON object")
    unknown = sorted(set(spec) - CONTRACT_KEYS)
    if unknown:
        raise ChainDataError(
            Location(file, column=unknown[0]),
            f"unknown key in contract (expected {', '.join(sorted(CONTRACT_KEYS))})",
        )
    expiry_text = _contract_value(spec, file, "expiry", str)
    expiry = to_utc(pl.Series([expiry_text], dtype=pl.String))[0]
    if expiry is None:
        raise ChainDataError(
            Location(file, column="expiry"), f"not an ISO-8601 timestamp: {expiry_text!r}"
        )
    return _Contract(
        underlying=_contract_value(spec, file, "underlying", str),
        underlying_kind=_contract_value(spec, file, "underlying_kind", str),
        expiry=expiry,
        rate=float(_contract_value(spec, file, "rate", float)),
        dividend_yield=float(_contract_value(spec, file, "dividend_yield", float, 0.0)),
    )


def _contract_value(spec: dict, file: str, key: str, kind: type[T], default: T | None = None) -> T:
    """``spec[key]`` if it has the expected JSON type (an int is a number, a bool is not)."""
    value = spec.get(key, default)
    if value is None:
        raise ChainDataError(Location(file, column=key), "missing required key in contract")
    accepted = (int, float) if kind is float else kind
    if isinstance(value, bool) or not isinstance(value, accepted):
        raise ChainDataError(
            Location(file, column=key),
            f"malformed contract: expected {'a number' if kind is float else 'text'}, "
            f"got {value!r}",
        )
    return value


def _underlying_prices(code: str, tables: list[_Table]) -> pl.DataFrame:
    """The underlying series (``ts``, ``underlying_price``), sorted; one file, unique times."""
    if not tables:
        raise ChainDataError(
            Location(f"{code}/{UNDERLYING_STEM}.csv"),
            "missing: CALL_/PUT_ files need underlying.csv (or .parquet) with ts, price",
        )
    if len(tables) > 1:
        raise ChainDataError(
            Location(tables[1].file), f"ambiguous: more than one underlying file in {code}/"
        )
    table = tables[0]
    ts = _parse(table, "ts", UTC_TS)
    _raise_first(table, "ts", ts.is_duplicated() & ts.is_not_null(), ts, "duplicate timestamp")
    prices = pl.DataFrame([ts, _parse(table, "price", pl.Float64()).alias("underlying_price")])
    return prices.drop_nulls("ts").sort("ts")


def _option_identity(table: _Table) -> tuple[str, float]:
    """Option type ('C'/'P') and strike from a per-option file name such as ``CALL_111.5``."""
    match = _PER_OPTION_NAME.match(table.stem)
    if match is None:
        raise ChainDataError(
            Location(table.file),
            "unrecognised file: no 'option_symbol' column (canonical layout) and not named "
            "CALL_<strike>, PUT_<strike> or underlying",
        )
    token = match["token"]
    if token.upper() not in OPTION_TYPE_TOKENS:
        raise ChainDataError(
            Location(table.file),
            f"unknown option type {token!r} in file name (expected CALL or PUT)",
        )
    try:
        strike = float(match["strike"])
    except ValueError:
        raise ChainDataError(
            Location(table.file), f"strike {match['strike']!r} in file name is not a number"
        ) from None
    return OPTION_TYPE_TOKENS[token.upper()], strike


def _bid_ask(table: _Table, price: pl.Series) -> tuple[pl.Series, pl.Series]:
    present = [c for c in ("bid", "ask") if c in table.frame.columns]
    if not present:
        return price.alias("bid"), price.alias("ask")
    if len(present) == 1:
        other = "ask" if present == ["bid"] else "bid"
        raise ChainDataError(
            Location(table.file, column=other),
            f"missing required column: {present[0]!r} is given, so {other!r} must be too",
        )
    return _parse(table, "bid", pl.Float64()), _parse(table, "ask", pl.Float64())


def _optional(table: _Table, column: str, dtype: pl.DataType) -> pl.Series:
    if column in table.frame.columns:
        return _parse(table, column, dtype)
    return pl.Series(column, [None] * table.frame.height, dtype)


def _option_frame(
    table: _Table, code: str, contract: _Contract, underlying: pl.DataFrame
) -> pl.DataFrame:
    option_type, strike = _option_identity(table)
    price = _parse(table, "price", pl.Float64())
    bid, ask = _bid_ask(table, price)
    quotes = pl.DataFrame(
        [
            _parse(table, "ts", UTC_TS),
            bid,
            ask,
            price.alias("last"),
            _optional(table, "volume", pl.Int64()),
            _optional(table, "open_interest", pl.Int64()),
            *_lineage(table),
        ]
    )
    joined = quotes.sort("ts").join_asof(underlying, on="ts", strategy="backward")
    orphans = joined.filter(pl.col("ts").is_not_null() & pl.col("underlying_price").is_null())
    if orphans.height:
        first = orphans.sort("source_row").row(0, named=True)
        start = underlying["ts"].min() if underlying.height else None
        raise ChainDataError(
            Location(table.file, first["source_row"], "ts"),
            f"no underlying price at or before {first['ts']} (underlying starts at {start})",
            more=orphans.height - 1,
        )
    return joined.select(
        weekly_code=pl.lit(code),
        ts="ts",
        underlying=pl.lit(contract.underlying),
        underlying_kind=pl.lit(contract.underlying_kind),
        underlying_price="underlying_price",
        option_symbol=pl.lit(option_symbol(code, option_type, strike)),
        option_type=pl.lit(option_type),
        strike=pl.lit(strike, pl.Float64),
        expiry=pl.lit(contract.expiry, UTC_TS),
        bid="bid",
        ask="ask",
        last="last",
        volume="volume",
        open_interest="open_interest",
        rate=pl.lit(contract.rate, pl.Float64),
        dividend_yield=pl.lit(contract.dividend_yield, pl.Float64),
        source_file="source_file",
        source_row="source_row",
    ).cast(FRAME_SCHEMA)
