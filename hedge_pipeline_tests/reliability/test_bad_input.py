"""Generated bad input: random malformed quote drops and portfolio templates (issue 7, item 4).

Each generated case starts from a valid file of the real format (the drops of
``stages/market_data/sources/malformed_corpus.py``, a template shaped like the packaged ones) and
applies random corruptions. The generator knows which corruptions *must* end badly (a crossed quote,
a missing required column, bytes that are not UTF-8, ...) and which may be harmless (an empty
optional cell, a UTF-8 BOM). Every case must end in one of three ways:

* the package's own error (``ChainDataError``, ``TemplateError``, ``SelectionError``) whose
  message names the file (and, where it gives them, a row and a column that exist);
* the documented quarantine (``market_data.validation``): every row either stored or set aside
  with its column and reason, and what is stored passes the rules again;
* a clean load, allowed only when no corruption had to fail.

Rows that load and pass the rules are then audited (``market_data.quality``, the blocking checks
of the staged partition): a price near but above its static bound passes the parser's tolerance
and fails ``static_no_arbitrage``. Through Dagster (``materialize`` into a real DuckDB file), a
failed case, at parse time or at the audit, must leave every table as it was: the previous good
version of the partition and another code's rows alike; an audit failure names file, row and
column of its worst offenders, as a parse error does.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hedge_pipeline.orchestration.resources import DataQualityResource, WarehouseResource
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data import quality
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.files import (
    CANONICAL_DEFAULTS,
    CONTRACT_KEYS,
    FilesSource,
)
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.selection.book import BOUNDARY_COLUMNS, SelectionError, select_portfolio
from hedge_pipeline.stages.selection.templates import (
    ENV_DIR,
    PACKAGED_DIR,
    TemplateError,
    load_template_file,
)
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import (
    DUCKDB_TYPES,
    NULLABLE_COLUMNS,
    RAW_COLUMNS,
    RAW_SCHEMA,
    UTC_TS,
    ChainDataError,
)
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code
from hedge_pipeline_tests.stages.market_data.sources.malformed_corpus import (
    CALL,
    CONTRACT,
    PUT,
    canonical_drop,
    per_option_drop,
    to_parquet,
)

CODE = "BAD1"  # the partition the generated drops target
OTHER = "GOOD1"  # a partition no generated drop touches
TABLES = ("raw_option_chains", "greeks_features", "quarantined_quotes")
UNDERLYING, CONTRACT_FILE, CANONICAL_FILE = "underlying.csv", "contract.json", "chain.csv"

# Text no number or timestamp parser reads: no digits, and none of the letters of
# 'nan', 'inf', 'infinity' or an exponent.
JUNK = st.text(alphabet="bcdghjklmopqrsuvwxz/?", min_size=1, max_size=8)
NON_FINITE = st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "1e400"])
BAD_DATES = st.sampled_from(["30/06/2025 14:05", "2025-13-45", "2025-06-31T25:00", "yesterday"])
LATE = "2031-01-02T03:04:05Z"  # after every expiry of the drops
# Option prices far above any static bound of the drops (their strikes and underlying prices
# are near 111): the measured 1e308, and prices a thousandfold too high.
INFLATED = st.sampled_from(["1e308", "1.5e5", "99999.99"])


# --- quote drops -----------------------------------------------------------------------------


@dataclass
class Sheet:
    """A CSV file as cells, so corruptions can edit columns and rows by name."""

    header: list[str]
    rows: list[list[str | None]]  # None: a cell cut off by a truncated line
    edits: list[tuple[int, str, str]] = field(default_factory=list)  # (row, column, class)
    touched: set[int] = field(default_factory=set)  # rows already corrupted once
    duplicated: bool = False

    @classmethod
    def parse(cls, text: str) -> Sheet:
        lines = text.strip("\n").split("\n")
        return cls(lines[0].split(","), [line.split(",") for line in lines[1:]])

    def text(self) -> str:
        lines = [",".join(self.header)]
        for row in self.rows:
            lines.append(",".join(c for c in row if c is not None))
        return "\n".join(lines) + "\n"

    def set(self, row: int, column: str, value: str, kind: str) -> None:
        self.rows[row][self.header.index(column)] = value
        self.edits.append((row, column, kind))
        self.touched.add(row)

    def untouched(self) -> list[int]:
        return [i for i in range(len(self.rows)) if i not in self.touched]


@dataclass
class Drop:
    """A drop under construction, and what its corruptions guarantee about the outcome."""

    layout: str  # 'canonical' or 'per_option'
    sheets: dict[str, Sheet]
    contract: dict[str, Any] | None
    parquet: bool = False
    failures: list[str] = field(default_factory=list)  # corruptions that must fail
    hidden: set[str] = field(default_factory=set)  # files whose defects a truncation may hide
    raw: dict[str, bytes] = field(default_factory=dict)  # byte-level replacements
    notes: list[str] = field(default_factory=list)

    def files(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for name, sheet in self.sheets.items():
            text = sheet.text()
            if self.parquet:
                out[name.replace(".csv", ".parquet")] = to_parquet(text)
            else:
                out[name] = text.encode()
        if self.contract is not None:
            out[CONTRACT_FILE] = json.dumps(self.contract).encode()
        return out | self.raw

    def must_fail(self) -> list[str]:
        """Every corruption whose effect survives the later ones (see ``_cell_fails``)."""
        reasons = list(self.failures)
        if self.contract is not None:
            reasons += [f"contract.json: {m}" for m in _contract_faults(self.contract)]
        for name, sheet in self.sheets.items():
            if name in self.hidden:
                continue
            reasons += [f"{name}: {m}" for m in _structural_faults(self, name, sheet)]
            if sheet.duplicated:
                reasons.append(f"{name}: duplicated row")
            for row, column, kind in sheet.edits:
                if column in sheet.header and _cell_fails(self, name, sheet, column, kind):
                    reasons.append(f"{name}: row {row + 1}, {column} <- {kind}")
        return reasons


def _structural_faults(drop: Drop, name: str, sheet: Sheet) -> list[str]:
    header = {h.strip().lower() for h in sheet.header}
    if drop.layout == "canonical":
        required = [c for c in RAW_COLUMNS if c not in CANONICAL_DEFAULTS]
    elif name == UNDERLYING:
        required = ["ts", "price"]
    else:
        required = ["ts", "price"]
        if ("bid" in header) != ("ask" in header):
            return ["bid without ask (or ask without bid)"]
    return [f"missing column {c}" for c in required if c not in header]


OPTION_KINDS = {"ts": "ts", "price": "float", "bid": "float", "ask": "float"}
OPTION_KINDS |= {"volume": "int", "open_interest": "int"}


def _kind(drop: Drop, name: str, column: str) -> str:
    """'float', 'int', 'ts', 'text', or 'other' for a column the layout does not read."""
    if drop.layout == "per_option":
        return OPTION_KINDS.get(column, "other")
    dtype = RAW_SCHEMA.get(column)
    if dtype is None:
        return "other"
    if dtype == UTC_TS:
        return "ts"
    return {pl.Float64(): "float", pl.Int64(): "int"}.get(dtype, "text")


def _nullable(drop: Drop, name: str, sheet: Sheet, column: str) -> bool:
    if drop.layout == "canonical":
        return column in NULLABLE_COLUMNS
    if name == UNDERLYING:
        return column == "ts"  # a row without a time is dropped; quotes join an earlier price
    if column == "price":
        return "bid" in sheet.header and "ask" in sheet.header  # then price is only `last`
    return column in ("volume", "open_interest")


NEGATIVE_FAILS = {"underlying_price", "strike", "bid", "ask", "last", "volume", "open_interest"}


def _cell_fails(drop: Drop, name: str, sheet: Sheet, column: str, kind: str) -> bool:
    """Whether a cell corruption of ``kind`` must end in an error or in quarantine."""
    if kind in (
        "junk",
        "blank",
        "non_finite",
        "bad_date",
        "fraction",
        "other_code",
        "crossed",
        "inflated",
    ):
        return True
    if kind == "missing":
        return not _nullable(drop, name, sheet, column)
    if kind == "negative":
        return drop.layout == "per_option" or column in NEGATIVE_FAILS
    if kind == "late":
        return name != UNDERLYING  # a late underlying price is simply never joined
    return False  # 'truncated': anything from harmless to broken


def _columns(drop: Drop, name: str, sheet: Sheet, kinds: tuple[str, ...]) -> list[str]:
    return [c for c in sheet.header if _kind(drop, name, c) in kinds]


def _untouched_row(draw: st.DrawFn, drop: Drop) -> tuple[str, Sheet, int] | None:
    """A random sheet of ``drop`` and one of its rows no corruption has touched yet (None when
    that sheet has none left): each strategy below corrupts a row of its own."""
    name = draw(st.sampled_from(sorted(drop.sheets)))
    sheet = drop.sheets[name]
    rows = sheet.untouched()
    return (name, sheet, draw(st.sampled_from(rows))) if rows else None


@st.composite
def _edit_cell(draw: st.DrawFn, drop: Drop) -> None:
    picked = _untouched_row(draw, drop)
    if picked is None:
        return
    name, sheet, row = picked
    kind = draw(st.sampled_from(["junk", "missing", "blank", "non_finite", "negative", "dates"]))
    if kind == "dates":
        column = draw(st.sampled_from(_columns(drop, name, sheet, ("ts",)) or ["-"]))
        if column == "-":
            return
        kind, value = draw(st.sampled_from([("bad_date", None), ("late", LATE), ("missing", "")]))
        if kind == "bad_date":
            value = draw(BAD_DATES)
        if column == "expiry" and kind == "late":
            kind, value = "late", "2020-01-01T00:00:00Z"  # an expiry before the quotes
    else:
        kinds = {"junk": ("float", "int", "ts"), "missing": ("float", "int", "ts", "text")}
        pool = _columns(drop, name, sheet, kinds.get(kind, ("float", "int")))
        if not pool:
            return
        column = draw(st.sampled_from(pool))
        value = {
            "junk": draw(JUNK),
            "missing": "",
            "blank": " ",
            "non_finite": draw(NON_FINITE),
            "negative": f"-{draw(st.floats(0.01, 1e6)):.2f}",
        }[kind]
        if _kind(drop, name, column) == "int" and kind == "negative":
            value = str(-draw(st.integers(1, 10**6)))
    sheet.set(row, column, value, kind)
    drop.notes.append(f"{name} row {row + 1} {column}={value!r}")


@st.composite
def _edit_text_cell(draw: st.DrawFn, drop: Drop) -> None:
    """Canonical text columns: another weekly code, an unknown option type or kind."""
    sheet = drop.sheets[CANONICAL_FILE]
    rows = sheet.untouched()
    present = [c for c in ("weekly_code", "option_type", "underlying_kind") if c in sheet.header]
    if not rows or not present:
        return
    row, column = draw(st.sampled_from(rows)), draw(st.sampled_from(present))
    value = {
        "weekly_code": draw(
            st.from_regex(r"[A-Z0-9_-]{1,12}", fullmatch=True).filter(lambda c: c != CODE)
        ),
        "option_type": draw(st.sampled_from(["X", "c", "Call", "PUT"])),
        "underlying_kind": draw(st.sampled_from(["stock", "Future", "index"])),
    }[column]
    sheet.set(row, column, value, "other_code")
    drop.notes.append(f"{CANONICAL_FILE} row {row + 1} {column}={value!r}")


@st.composite
def _cross_quote(draw: st.DrawFn, drop: Drop) -> None:
    names = [n for n, s in drop.sheets.items() if {"bid", "ask"} <= set(s.header)]
    if not names:
        return
    name = draw(st.sampled_from(sorted(names)))
    sheet = drop.sheets[name]
    rows = [r for r in sheet.untouched() if _number(sheet, r, "ask") is not None]
    if not rows:
        return
    row = draw(st.sampled_from(rows))
    bid = _number(sheet, row, "ask") + draw(st.floats(0.01, 10.0))
    sheet.set(row, "bid", f"{bid:.4f}", "crossed")
    drop.notes.append(f"{name} row {row + 1} crossed bid {bid:.4f}")


@st.composite
def _inflate_price(draw: st.DrawFn, drop: Drop) -> None:
    """An option's bid, ask or last far above what the option can be worth: the parser's
    static-bound rule refuses it (a bid that high is also a crossed quote)."""
    name = draw(st.sampled_from(sorted(n for n in drop.sheets if n != UNDERLYING)))
    sheet = drop.sheets[name]
    columns = [c for c in ("bid", "ask", "last", "price") if c in sheet.header]
    rows = sheet.untouched()
    if not columns or not rows:
        return
    row, column, value = draw(st.sampled_from(rows)), draw(st.sampled_from(columns)), draw(INFLATED)
    sheet.set(row, column, value, "inflated")
    drop.notes.append(f"{name} row {row + 1} {column}={value}")


def _number(sheet: Sheet, row: int, column: str) -> float | None:
    try:
        return float(sheet.rows[row][sheet.header.index(column)] or "")
    except ValueError:
        return None


@st.composite
def _drop_or_rename_column(draw: st.DrawFn, drop: Drop) -> None:
    name = draw(st.sampled_from(sorted(drop.sheets)))
    sheet = drop.sheets[name]
    if len(sheet.header) < 2:
        return
    i = draw(st.integers(0, len(sheet.header) - 1))
    old = sheet.header[i]
    # Never to a name a reader knows: edits are tracked by column name, and a column renamed
    # to one that was dropped would inherit the dropped column's edits.
    taken = {h.strip().lower() for h in sheet.header} | set(RAW_COLUMNS) | set(OPTION_KINDS)
    new = draw(st.from_regex(r"[A-Za-z_][A-Za-z0-9_ ]{0,12}", fullmatch=True))
    if draw(st.booleans()) and new.strip().lower() not in taken:
        sheet.header[i] = new
        drop.notes.append(f"{name}: renamed {old!r} to {new!r}")
    else:
        del sheet.header[i]
        for row in sheet.rows:
            if i < len(row):
                del row[i]
        drop.notes.append(f"{name}: dropped {old!r}")


@st.composite
def _duplicate_row(draw: st.DrawFn, drop: Drop) -> None:
    picked = _untouched_row(draw, drop)
    if picked is None:
        return
    name, sheet, row = picked
    sheet.rows.append(list(sheet.rows[row]))
    sheet.touched |= {row, len(sheet.rows) - 1}
    sheet.duplicated = True
    drop.notes.append(f"{name}: row {row + 1} duplicated")


@st.composite
def _truncate_line(draw: st.DrawFn, drop: Drop) -> None:
    picked = _untouched_row(draw, drop)
    if picked is None:
        return
    name, sheet, row = picked
    line = ",".join(c for c in sheet.rows[row] if c is not None)
    cut = line[: draw(st.integers(0, max(len(line) - 1, 0)))].split(",")
    sheet.rows[row] = cut + [None] * (len(sheet.rows[row]) - len(cut))
    sheet.edits.append((row, "", "truncated"))
    sheet.touched.add(row)
    drop.notes.append(f"{name}: row {row + 1} cut to {','.join(cut)!r}")


@st.composite
def _break_contract(draw: st.DrawFn, drop: Drop) -> None:
    if drop.contract is None:
        return
    key = draw(st.sampled_from(sorted(CONTRACT_KEYS)))
    how = draw(st.sampled_from(["delete", "wrong_type", "unknown_key", "bad_value"]))
    if how == "delete":
        drop.contract.pop(key, None)
    elif how == "wrong_type":
        numeric = key in ("rate", "dividend_yield")
        wrong = [None, True, [1], {"a": 1}, "4.5%"] if numeric else [None, 1, 1.5, False, ["ZC"]]
        drop.contract[key] = draw(st.sampled_from(wrong))
    elif how == "unknown_key":
        key = draw(
            st.from_regex(r"[a-z_]{1,10}", fullmatch=True).filter(lambda k: k not in CONTRACT_KEYS)
        )
        drop.contract[key] = 1
    else:
        drop.contract[key] = {
            "underlying_kind": "stock",
            "expiry": draw(BAD_DATES | st.just("2020-01-01T00:00:00Z")),
            "rate": math.nan,
            "dividend_yield": math.inf,
            "underlying": draw(st.sampled_from(["", "  "])),
        }[key]
    drop.notes.append(f"contract.json: {how} {key} -> {drop.contract.get(key, '<deleted>')!r}")


def _contract_faults(contract: dict[str, Any]) -> list[str]:
    """What is wrong with a contract.json: every change ``_break_contract`` makes is, except
    deleting the optional dividend_yield."""
    faults = [f"unknown key {k}" for k in contract if k not in CONTRACT_KEYS]
    faults += [f"{k} missing" for k in CONTRACT_KEYS - {"dividend_yield"} if k not in contract]
    valid = CONTRACT | {"dividend_yield": 0.0}
    faults += [f"{k}={v!r}" for k, v in contract.items() if k in valid and v != valid[k]]
    return faults


@st.composite
def _mangle_bytes(draw: st.DrawFn, drop: Drop) -> None:
    """One file's bytes: bad encodings, emptiness, truncation (last: it sees the final text)."""
    content = drop.files()
    name = draw(st.sampled_from(sorted(content)))
    data = content[name]
    how = draw(
        st.sampled_from(["invalid_utf8", "utf16", "empty", "header_only", "truncate", "bom_crlf"])
    )
    is_text = name.endswith((".csv", ".json"))
    if how == "invalid_utf8" and is_text:
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xe9"]))
            + data[at:]
        )
        drop.failures.append(f"{name}: not UTF-8")
    elif how == "utf16" and is_text:
        data = data.decode().encode("utf-16")
        drop.failures.append(f"{name}: UTF-16")
    elif how == "empty":
        data = draw(st.sampled_from([b"", b"\n", b"  \n\n"]))
        drop.failures.append(f"{name}: empty")
    elif how == "header_only" and name.endswith(".csv"):
        data = data.split(b"\n", 1)[0] + b"\n"
        drop.failures.append(f"{name}: header only")
    elif how == "bom_crlf" and is_text:
        data = b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")
    else:
        data = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        if name.endswith((".parquet", ".json")):
            drop.failures.append(f"{name}: truncated")  # a prefix of either is unreadable
        drop.hidden.add(name.replace(".parquet", ".csv"))
        how = "truncate"
    drop.raw[name] = data
    drop.notes.append(f"{name}: bytes {how}")


def valid_drop(layout: str, parquet: bool = False) -> Drop:
    """The corpus's valid drop of ``layout``, ready to corrupt."""
    source = canonical_drop(CODE) if layout == "canonical" else per_option_drop(CODE)
    return Drop(
        layout,
        {n: Sheet.parse(c.decode()) for n, c in source.items() if n.endswith(".csv")},
        dict(CONTRACT) if layout == "per_option" else None,
        parquet=parquet,
    )


@st.composite
def malformed_drops(draw: st.DrawFn) -> Drop:
    """A valid drop of either layout with one to three random corruptions."""
    layout = draw(st.sampled_from(["canonical", "per_option"]))
    drop = valid_drop(layout, parquet=layout == "canonical" and draw(st.booleans()))
    # Row-level corruptions come up more often: they are the ones quarantine can set aside.
    edits = [_edit_cell] * 3 + [_cross_quote, _inflate_price, _duplicate_row, _truncate_line]
    edits += [_drop_or_rename_column]
    edits += [_edit_text_cell] if layout == "canonical" else [_break_contract]
    for _ in range(draw(st.integers(1, 3))):
        draw(draw(st.sampled_from(edits))(drop))
    if draw(st.integers(0, 3)) == 0:
        draw(_mangle_bytes(drop))
    return drop


def crossed_call_quote() -> Drop:
    """One crossed quote: quarantined under 'quarantine', an error under 'reject'."""
    drop = valid_drop("per_option")
    drop.sheets[CALL].set(1, "bid", "9.99", "crossed")
    return drop


def inflated_put_price() -> Drop:
    """The measured problem: a put quoted at 1e308, refused at parse time."""
    drop = valid_drop("per_option")
    drop.sheets[PUT].set(2, "price", "1e308", "inflated")
    return drop


def call_quoted_above_its_bound() -> Drop:
    """A call bid and asked 4-5% above the underlying price: within the parser's tolerance,
    above the discounted bound, so the audit of the staged rows refuses the partition."""
    drop = valid_drop("per_option")
    drop.sheets[CALL].set(1, "bid", "116.00", "near_bound")
    drop.sheets[CALL].set(1, "ask", "117.00", "near_bound")
    return drop


def canonical_without_option_symbol() -> Drop:
    """Found by Hypothesis: the error named a contract.json the canonical layout never needs."""
    drop = valid_drop("canonical", parquet=True)
    sheet = drop.sheets[CANONICAL_FILE]
    column = sheet.header.index("option_symbol")
    del sheet.header[column]
    for row in sheet.rows:
        del row[column]
    return drop


def _write(root: Path, drop: Drop) -> None:
    folder = root / CODE
    shutil.rmtree(folder, ignore_errors=True)
    write_drop_files(folder, drop.files())


def write_drop_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)


def _check_error(error: ChainDataError, drop: Drop) -> None:
    """The error names the code's folder or one of its files, and a row and column that exist."""
    files = drop.files()
    location = error.location
    named = location.file.removeprefix(f"{CODE}/")
    assert str(error).startswith(location.file), str(error)
    # The per-option layout's error for a missing contract.json or underlying.csv names it.
    expected = files.keys() | (
        {UNDERLYING, CONTRACT_FILE} if drop.layout == "per_option" else set()
    )
    assert location.file == CODE or named in expected, str(error)
    if location.row is not None:
        sheet = drop.sheets.get(named.replace(".parquet", ".csv"))
        rows = max(files.get(named, b"").count(b"\n"), len(sheet.rows) if sheet else 0)
        assert 1 <= location.row <= rows + 1, str(error)
    if location.column is not None:
        known = set(RAW_COLUMNS) | CONTRACT_KEYS | set(drop.contract or {}) | {"price"}
        assert location.column in known, str(error)


@dataclass(frozen=True)
class Outcome:
    kind: str  # 'error', 'audit' (a blocking check of the staged rows fails), 'quarantine', 'clean'
    stored: int = 0  # rows fit to store
    quarantined: int = 0


def judge(root: Path, drop: Drop, policy: str) -> Outcome:
    """Load and validate the drop; check the outcome against the contract of this module."""
    try:
        frame = FilesSource(root).load(CODE)
        result = validate_chain(frame, policy)
    except ChainDataError as error:
        _check_error(error, drop)
        return Outcome("error")
    assert result.valid.height + result.quarantined.height == frame.height
    # What is kept breaks no rule: judged again, it passes under 'reject'.
    kept = result.valid.with_columns(
        source_file=pl.lit("kept"), source_row=pl.int_range(1, pl.len() + 1)
    )
    validate_chain(kept, "reject")
    if result.quarantined.height:
        assert policy == "quarantine"
        assert result.quarantined["reason"].null_count() == 0
        assert set(result.quarantined["column"]) <= set(RAW_COLUMNS)
    else:
        reasons = drop.must_fail()
        assert not reasons, f"loaded cleanly despite {reasons}"
    # The staged rows' audit, as the asset runs it on rows of the contract's types.
    types = {column: DUCKDB_TYPES[dtype] for column, dtype in RAW_SCHEMA.items()}
    rate = DataQualityResource().max_arbitrage_violation_rate
    audits = quality.audit_raw(result.valid, types, rate)
    if not all(quality.all_passed(outcomes) for outcomes in audits.values()):
        return Outcome("audit")
    kind = "quarantine" if result.quarantined.height else "clean"
    return Outcome(kind, result.valid.height, result.quarantined.height)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(drop=malformed_drops(), policy=st.sampled_from(["reject", "quarantine"]))
@example(drop=canonical_without_option_symbol(), policy="reject")
@example(drop=inflated_put_price(), policy="quarantine")
def test_generated_drops_end_in_a_clear_error_or_quarantine(tmp_path, drop, policy):
    """The source and the row rules alone, on many cases (each one writes its own folder)."""
    _write(tmp_path, drop)
    outcome = judge(tmp_path, drop, policy)
    event(f"{policy}: {outcome.kind}, {'must fail' if drop.must_fail() else 'may pass'}")


def _snapshot() -> dict[tuple[str, str], str]:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return {(t, c): warehouse.partition_hash(con, t, c) for t in TABLES for c in (CODE, OTHER)}


@pytest.fixture
def seeded_warehouse(instance, data_dir: Path, synthetic_code_frame) -> Iterator[Path]:
    """A warehouse holding a good version of the target partition and another code's rows,
    saved aside so that each generated case starts from it."""
    raw = data_dir / "raw"
    for code in (CODE, OTHER):
        write_drop(small_book(synthetic_code_frame), raw, code)
        assert materialize_code(instance, code, kind="files", raw_dir=raw).success
    shutil.rmtree(raw / CODE)
    pristine = data_dir / "seeded.duckdb"
    shutil.copyfile(paths.warehouse_path(), pristine)
    yield pristine


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drop=malformed_drops(), policy=st.sampled_from(["reject", "quarantine"]))
@example(drop=crossed_call_quote(), policy="quarantine")
@example(drop=canonical_without_option_symbol(), policy="reject")
@example(drop=inflated_put_price(), policy="reject")
@example(drop=call_quoted_above_its_bound(), policy="reject")
def test_generated_drops_through_dagster_change_nothing_when_they_fail(
    instance, data_dir, seeded_warehouse, drop, policy
):
    """``raw_option_chains`` and ``greeks_features`` materialized into the real DuckDB file."""
    shutil.copyfile(seeded_warehouse, paths.warehouse_path())
    raw = data_dir / "raw"
    _write(raw, drop)
    expected = judge(raw, drop, policy)
    before = _snapshot()
    result = materialize_code(
        instance, CODE, kind="files", raw_dir=raw, bad_rows=policy, raise_on_error=False
    )
    after = _snapshot()
    assert {k: v for k, v in after.items() if k[1] == OTHER} == {
        k: v for k, v in before.items() if k[1] == OTHER
    }
    if expected.kind == "error":
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "raw_option_chains"
        message = failure.step_failure_data.user_failure_data.description
        assert message.startswith(CODE), message  # the code's folder or a file in it
        assert after == before
        return
    if expected.kind == "audit":
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert failure.step_key == "raw_option_chains"
        message = failure.step_failure_data.user_failure_data.description
        assert message.startswith(f"raw_option_chains {CODE!r} not published"), message
        # Each offender named: a file of the drop, a row of it, a column of the layout.
        named = re.findall(r"\n  ([^,\n]+), row (\d+), column '(\w+)': ", message)
        assert named, message
        files = {f"{CODE}/{name}" for name in drop.files()}
        for file, row, column in named:
            assert file in files and int(row) >= 1 and column in RAW_COLUMNS, message
        assert after == before
        return
    [stored] = result.asset_materializations_for_node("raw_option_chains")
    assert stored.metadata["quarantined_rows"].value == expected.quarantined
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM raw_option_chains WHERE weekly_code = $1),"
            " (SELECT count(*) FROM quarantined_quotes WHERE weekly_code = $1"
            '  AND reason IS NOT NULL AND "column" IS NOT NULL)',
            [CODE],
        ).fetchone()
    assert counts == (expected.stored, expected.quarantined)


# --- portfolio templates ---------------------------------------------------------------------

TEMPLATE = "generated"  # file name (and, unless corrupted, the name field) of every case
REQUIRED_FIELDS = {("name",), ("description",), ("max_options",)}
ODD_VALUES = [None, True, "x", "", -1, 0, 1.5, 10**30, [], {}, [1, 2], math.nan, math.inf]
FEATURE_CODES = ("3CN5", "3IN5")


ABSENT = object()


@dataclass
class TemplateCase:
    """A template under construction, and what its corruptions guarantee."""

    data: Any
    text: bytes | None = None  # set once the JSON itself is broken
    planted: list[tuple[tuple, Any]] = field(default_factory=list)  # (path, value or ABSENT)
    broken_json: str | None = None
    notes: list[str] = field(default_factory=list)

    def content(self) -> bytes:
        return self.text if self.text is not None else json.dumps(self.data).encode()

    def plant(self, path: tuple, value: Any) -> None:
        """A corruption that must fail as long as ``path`` still holds ``value`` at the end."""
        self.planted.append((path, value))

    @property
    def failures(self) -> list[str]:
        found = [f"JSON {self.broken_json}"] if self.broken_json else []
        for path, value in self.planted:
            try:
                current = _get(self.data, path)
            except (KeyError, TypeError):
                current = ABSENT
            if current is value:
                found.append(f"{'.'.join(path)} = {'<absent>' if value is ABSENT else value!r}")
        return found


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested JSON object (lists count as leaves)."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    return out


def _parent(data: dict, path: tuple) -> dict:
    for key in path[:-1]:
        data = data[key]
    return data


@st.composite
def _delete_field(draw: st.DrawFn, case: TemplateCase) -> None:
    path = draw(st.sampled_from(_paths(case.data)))
    del _parent(case.data, path)[path[-1]]
    if path in REQUIRED_FIELDS:
        case.plant(path, ABSENT)
    case.notes.append(f"deleted {'.'.join(path)}")


@st.composite
def _odd_value(draw: st.DrawFn, case: TemplateCase) -> None:
    """A value of another type or range: pydantic may coerce it, so it need not fail."""
    path = draw(st.sampled_from(_paths(case.data)))
    value = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))  # later edits may mutate it
    _parent(case.data, path)[path[-1]] = value
    case.notes.append(f"{'.'.join(path)} = {value!r}")


@st.composite
def _unknown_field(draw: st.DrawFn, case: TemplateCase) -> None:
    nodes = [()] + [p for p in _paths(case.data) if isinstance(_get(case.data, p), dict)]
    node = draw(st.sampled_from(nodes))
    key = "zz_" + draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True))
    value = _get(case.data, node)[key] = {"nested": 1}  # training_params takes scalars only
    case.plant((*node, key), value)
    case.notes.append(f"added {'.'.join((*node, key))}")


def _get(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


@st.composite
def _bad_codes(draw: st.DrawFn, case: TemplateCase) -> None:
    criteria = case.data.setdefault("selection_criteria", {})
    if not isinstance(criteria, dict):
        return
    unknown = draw(
        st.from_regex(r"[A-Z0-9]{2,8}", fullmatch=True).filter(lambda c: c not in FEATURE_CODES)
    )
    invalid = draw(st.sampled_from(["a,b", "", "3C N5", "3CN5/..", "ß"]))
    codes = [FEATURE_CODES[0], draw(st.sampled_from([unknown, invalid]))]
    criteria["weekly_codes"] = codes
    case.plant(("selection_criteria", "weekly_codes"), codes)
    case.notes.append(f"weekly_codes = {codes}")


@st.composite
def _bad_weights(draw: st.DrawFn, case: TemplateCase) -> None:
    count = case.data.get("max_options")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 8:
        return
    weights = draw(st.lists(st.floats(0.1, 5.0), min_size=count, max_size=count))
    weights[draw(st.integers(0, count - 1))] = draw(
        st.sampled_from([-1.0, -0.001, math.nan, math.inf, -math.inf])
    )
    case.data["position_weights"] = weights
    case.plant(("position_weights",), weights)
    case.notes.append(f"position_weights = {weights}")


@st.composite
def _other_name(draw: st.DrawFn, case: TemplateCase) -> None:
    name = draw(st.from_regex(r"[a-z_]{1,12}", fullmatch=True).filter(lambda n: n != TEMPLATE))
    case.data["name"] = name
    case.plant(("name",), name)
    case.notes.append(f"name = {name!r}")


@st.composite
def _break_json(draw: st.DrawFn, case: TemplateCase) -> None:
    """The file's text itself: truncated, YAML, JS-style, badly encoded, empty, not an object."""
    text = json.dumps(case.data, indent=2)
    how = draw(
        st.sampled_from(
            ["truncate", "yaml", "trailing_comma", "single_quotes", "invalid_utf8", "utf16",
             "empty", "not_object", "bom"]
        )
    )  # fmt: skip
    if how == "truncate":
        raw = text.encode()[: draw(st.integers(0, len(text) - 1))]
    elif how == "yaml":
        raw = "".join(f"{k}: {json.dumps(v)}\n" for k, v in case.data.items()).encode()
    elif how == "trailing_comma":
        raw = text.replace("\n}", ",\n}", 1).encode()
    elif how == "single_quotes":
        raw = text.replace('"', "'").encode()
    elif how == "invalid_utf8":
        at = draw(st.integers(0, len(text)))
        raw = (
            text.encode()[:at]
            + draw(st.sampled_from([b"\xff", b"\xe9", b"\x80"]))
            + text.encode()[at:]
        )
    elif how == "utf16":
        raw = text.encode("utf-16")
    elif how == "empty":
        raw = draw(st.sampled_from([b"", b"\n", b"   "]))
    elif how == "not_object":
        raw = json.dumps(draw(st.sampled_from([[case.data], None, 4, "atm_book"]))).encode()
    else:
        raw = b"\xef\xbb\xbf" + text.encode()  # a BOM, as some editors write: still the template
    case.text = raw
    if how != "bom":
        case.broken_json = how
    case.notes.append(f"file text: {how}")


@st.composite
def malformed_templates(draw: st.DrawFn) -> TemplateCase:
    """A packaged template's content under another name, with one to three corruptions."""
    packaged = draw(st.sampled_from(["atm_book", "delta_gamma_book", "best_liquidity_single"]))
    data = json.loads((PACKAGED_DIR / f"{packaged}.json").read_text(encoding="utf-8"))
    case = TemplateCase(data | {"name": TEMPLATE})
    edits = [_delete_field, _odd_value, _odd_value, _unknown_field, _bad_codes, _bad_weights]
    edits += [_other_name]
    for _ in range(draw(st.integers(1, 3))):
        draw(draw(st.sampled_from(edits))(case))
    if draw(st.integers(0, 3)) == 0:
        draw(_break_json(case))
    return case


def _packaged_with(must_fail: bool, **changes: Any) -> TemplateCase:
    """atm_book under this module's name with fields replaced."""
    data = json.loads((PACKAGED_DIR / "atm_book.json").read_text(encoding="utf-8"))
    case = TemplateCase(data | {"name": TEMPLATE} | changes)
    for key, value in changes.items():
        if must_fail:
            case.plant((key,), value)
    return case


@pytest.fixture(scope="module")
def features(synthetic_code_frame) -> pl.DataFrame:
    """greeks_features rows of two small codes: enough bars for every packaged template."""
    book = compute_features(small_book(synthetic_code_frame, options=10, bars=240))
    return pl.concat(book.with_columns(weekly_code=pl.lit(c)) for c in FEATURE_CODES)


def judge_template(path: Path, features: pl.DataFrame, case: TemplateCase) -> str:
    """Load and apply the template; check the outcome against the contract of this module."""
    try:
        template = load_template_file(path)
    except TemplateError as error:
        # One line per problem, each naming the file, and a field where there is one.
        for line in str(error).splitlines():
            assert line.startswith(f"{path}: "), str(error)
        return "template error"
    try:
        selection = select_portfolio(features, template)
    except SelectionError as error:
        assert repr(template.name) in str(error) or "vega" in str(error), str(error)
        return "selection error"
    frame = selection.frame
    book = frame.filter(~pl.col("is_hedge_instrument"))
    assert book["weight"].is_finite().all() and (book["weight"] >= 0).all(), frame
    assert book["weight"].sum() > 0
    assert (frame.filter(pl.col("is_hedge_instrument"))["weight"] == 0).all()
    assert set(frame["weekly_code"]) <= set(FEATURE_CODES)
    assert frame.join(features, on=["weekly_code", "option_symbol"], how="anti").is_empty()
    assert book.group_by("weekly_code").len()["len"].max() <= template.max_options
    bounds = frame.select(BOUNDARY_COLUMNS).rows()
    assert all(list(b) == sorted(b) for b in bounds)
    assert not case.failures, f"selected despite {case.failures}"
    return "selected"


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=malformed_templates())
# Each crashed or was stored before the package was fixed: polars' head() overflowed, NaN
# weights were stored, a UTF-16 file raised a bare UnicodeDecodeError naming no file.
@example(case=_packaged_with(False, max_options=10**30))
@example(case=_packaged_with(True, position_weights=[math.nan, 1.0, 1.0, 1.0]))
@example(case=TemplateCase({}, text="{}".encode("utf-16"), broken_json="utf16"))
def test_generated_templates_end_in_a_clear_error_or_a_sound_selection(tmp_path, features, case):
    path = tmp_path / f"{TEMPLATE}.json"
    path.write_bytes(case.content())
    outcome = judge_template(path, features, case)
    event(f"{outcome}, {'must fail' if case.failures else 'may pass'}")


def _selection_table() -> pl.DataFrame:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return con.sql("SELECT * FROM portfolio_selection ORDER BY ALL").pl()


def _select(instance: dg.DagsterInstance, template: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [portfolio_selection],
        instance=instance,
        resources={"warehouse_db": WarehouseResource(path=str(paths.warehouse_path()))},
        run_config={"ops": {"portfolio_selection": {"config": {"template": template}}}},
        raise_on_error=False,
    )


@pytest.fixture
def selected(instance, data_dir, features, monkeypatch) -> Path:
    """A warehouse with both codes' features and a selection by the packaged atm_book; the
    generated templates go to a HEDGE_PORTFOLIO_DIR of their own."""
    with warehouse.connect(paths.warehouse_path()) as con:
        for code in FEATURE_CODES:
            rows = features.filter(pl.col("weekly_code") == code)
            warehouse.replace_partition(con, code, {"greeks_features": rows})
    instance.add_dynamic_partitions("weekly_code", list(FEATURE_CODES))
    assert _select(instance, "atm_book").success
    folder = data_dir / "templates"
    folder.mkdir()
    monkeypatch.setenv(ENV_DIR, str(folder))
    return folder


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=malformed_templates())
@example(case=_packaged_with(True, position_weights=[math.nan, 1.0, 1.0, 1.0]))
@example(case=_packaged_with(False, max_options=10**30))
def test_generated_templates_through_dagster_keep_the_previous_selection(
    instance, features, selected, case
):
    """``portfolio_selection`` materialized with the generated template: a failure names the
    file or the template and leaves the table as it was."""
    path = selected / f"{TEMPLATE}.json"
    path.write_bytes(case.content())
    expected = judge_template(path, features, case)
    before = _selection_table()
    result = _select(instance, TEMPLATE)
    if expected != "selected":
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = failure.step_failure_data.user_failure_data.description
        assert str(path) in message or repr(TEMPLATE) in message, message
        assert _selection_table().equals(before)
        return
    assert result.success
    table = _selection_table()
    assert set(table["template"]) == {TEMPLATE}
    stored = table.with_columns(pl.col(pl.Datetime).dt.replace_time_zone("UTC"))
    fresh = select_portfolio(features, load_template_file(path)).frame
    assert stored.equals(fresh.sort(stored.columns).select(stored.columns))
