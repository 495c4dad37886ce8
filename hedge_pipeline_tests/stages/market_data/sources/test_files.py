"""The files source: both layouts in CSV and Parquet, conventions, fingerprints, errors."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from hedge_pipeline.stages.market_data.sources.files import FilesSource
from hedge_pipeline.stages.market_data.validation import validate_chain
from hedge_pipeline.tables.schema import (
    LINEAGE_SCHEMA,
    RAW_COLUMNS,
    RAW_SCHEMA,
    ChainDataError,
    Location,
    UnknownWeeklyCodeError,
)
from hedge_pipeline_tests.stages.market_data.sources.malformed_corpus import (
    CASES,
    Case,
    canonical_drop,
    parquet_bytes,
    per_option_drop,
    to_parquet,
)

CODE = "3CN5"
FRAME_SCHEMA = pl.Schema(RAW_SCHEMA | LINEAGE_SCHEMA)


def ts(hour: int, minute: int, day: int = 30, month: int = 6) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def write_drop(root: Path, code: str, files: dict[str, bytes]) -> Path:
    folder = root / code
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def csv_as_parquet(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same drop with every CSV file written as Parquet (timestamps as timestamps)."""
    return {
        (name.removesuffix(".csv") + ".parquet" if name.endswith(".csv") else name): (
            to_parquet(content.decode()) if name.endswith(".csv") else content
        )
        for name, content in files.items()
    }


def test_per_option_csv_layout(tmp_path: Path) -> None:
    write_drop(tmp_path, CODE, per_option_drop(CODE))
    df = FilesSource(tmp_path).load(CODE)
    assert df.schema == FRAME_SCHEMA
    assert df["option_symbol"].unique(maintain_order=True).to_list() == ["3CN5_C111.5", "3CN5_P110"]
    call = df.row(1, named=True)
    assert call == {
        "weekly_code": CODE,
        "ts": ts(14, 5),
        "underlying": "ZC",
        "underlying_kind": "future",
        "underlying_price": 111.4,
        "option_symbol": "3CN5_C111.5",
        "option_type": "C",
        "strike": 111.5,
        "expiry": ts(18, 20, day=3, month=7),
        "bid": 1.25,
        "ask": 1.35,
        "last": 1.30,
        "volume": 4,
        "open_interest": None,
        "rate": 0.045,
        "dividend_yield": 0.0,
        "source_file": "3CN5/CALL_111.5.csv",
        "source_row": 2,
    }
    put = df.filter(pl.col("option_type") == "P")
    # Without bid/ask the price is both (zero spread), and always `last`.
    assert put["bid"].to_list() == put["ask"].to_list() == put["last"].to_list()
    assert put["volume"].null_count() == put.height
    assert validate_chain(df).valid.height == 6


def test_per_option_parquet_layout_matches_csv(tmp_path: Path) -> None:
    write_drop(tmp_path / "csv", CODE, per_option_drop(CODE))
    write_drop(tmp_path / "pq", CODE, csv_as_parquet(per_option_drop(CODE)))
    from_csv = FilesSource(tmp_path / "csv").load(CODE)
    from_parquet = FilesSource(tmp_path / "pq").load(CODE)
    assert from_parquet.schema == FRAME_SCHEMA
    assert from_parquet.select(RAW_COLUMNS).equals(from_csv.select(RAW_COLUMNS))
    assert set(from_parquet["source_file"]) == {"3CN5/CALL_111.5.parquet", "3CN5/PUT_110.0.parquet"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_canonical_round_trip(tmp_path: Path, fmt: str) -> None:
    write_drop(tmp_path / "a", CODE, per_option_drop(CODE))
    original = FilesSource(tmp_path / "a").load(CODE).select(RAW_COLUMNS)
    folder = tmp_path / "b" / CODE
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    (original.write_csv if fmt == "csv" else original.write_parquet)(buffer)
    (folder / f"export.{fmt}").write_bytes(buffer.getvalue())
    loaded = FilesSource(tmp_path / "b").load(CODE)
    assert loaded.schema == FRAME_SCHEMA
    assert loaded.select(RAW_COLUMNS).equals(original)
    assert loaded["source_row"].to_list() == list(range(1, original.height + 1))


def test_canonical_optional_columns_and_extras(tmp_path: Path) -> None:
    text = canonical_drop(CODE)["chain.csv"].decode()
    frame = pl.read_csv(io.StringIO(text)).drop("last", "volume", "open_interest", "dividend_yield")
    frame = frame.with_columns(comment=pl.lit("ignored"))
    write_drop(tmp_path, CODE, {"chain.parquet": parquet_bytes(frame)})
    df = FilesSource(tmp_path).load(CODE)
    assert df.schema == FRAME_SCHEMA
    assert df.select("last", "volume", "open_interest").null_count().row(0) == (4, 4, 4)
    assert set(df["dividend_yield"]) == {0.0}


def test_mixed_layouts_in_one_folder(tmp_path: Path) -> None:
    text = (
        canonical_drop(CODE)["chain.csv"].decode().replace("P110", "P105").replace(",110,", ",105,")
    )
    write_drop(tmp_path, CODE, per_option_drop(CODE) | {"chain.csv": text.encode()})
    df = FilesSource(tmp_path).load(CODE)
    assert df.group_by("source_file").len().sort("source_file").rows() == [
        ("3CN5/CALL_111.5.csv", 3),
        ("3CN5/PUT_110.0.csv", 3),
        ("3CN5/chain.csv", 4),
    ]
    # Sorted by option and time, whichever file a row came from.
    assert df.select("option_symbol", "ts").equals(df.select("option_symbol", "ts").sort(pl.all()))


def test_underlying_is_joined_as_of_backward(tmp_path: Path) -> None:
    put = (
        "ts,price\n2025-06-30T14:00:00Z,0.80\n2025-06-30T14:07:30Z,0.76\n2025-06-30T14:30:00Z,0.7\n"
    )
    write_drop(tmp_path, CODE, per_option_drop(CODE) | {"PUT_110.0.csv": put.encode()})
    df = FilesSource(tmp_path).load(CODE).filter(pl.col("option_type") == "P")
    # 14:00 exact; 14:07:30 takes 14:05's price; 14:30 the last one (14:10). Never a later price.
    assert df["underlying_price"].to_list() == [111.2, 111.4, 111.3]


def test_timestamps_naive_are_utc_and_offsets_are_converted(tmp_path: Path) -> None:
    put = (
        "ts,price\n"
        "2025-06-30 14:00:00,0.80\n"  # naive, space separator
        "2025-06-30T16:05:00+02:00,0.75\n"  # offset
        "2025-06-30T14:10:00.250Z,0.78\n"  # Z, fractional seconds
        "2025-06-30T10:15-0400,0.77\n"  # offset without colon, no seconds
    )
    contract = json.dumps(
        {"underlying": "ZC", "underlying_kind": "future", "expiry": "2025-07-03", "rate": 0.0}
    )
    files = per_option_drop(CODE) | {
        "PUT_110.0.csv": put.encode(),
        "contract.json": contract.encode(),
    }
    write_drop(tmp_path, CODE, files)
    df = FilesSource(tmp_path).load(CODE)
    puts = df.filter(pl.col("option_type") == "P")
    assert puts["ts"].to_list() == [
        ts(14, 0),
        ts(14, 5),
        datetime(2025, 6, 30, 14, 10, 0, 250000, tzinfo=UTC),
        ts(14, 15),
    ]
    assert set(df["expiry"]) == {datetime(2025, 7, 3, tzinfo=UTC)}  # a bare date is 00:00 UTC


def test_parquet_timestamps_naive_and_zoned(tmp_path: Path) -> None:
    naive = [datetime(2025, 6, 30, 14, 0), datetime(2025, 6, 30, 14, 5)]
    put = pl.DataFrame({"ts": naive, "price": [0.8, 0.75]})
    call = pl.DataFrame({"ts": naive, "price": [1.2, 1.3]}).with_columns(
        pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Paris")
    )
    files = per_option_drop(CODE)
    del files["PUT_110.0.csv"], files["CALL_111.5.csv"]
    files |= {"PUT_110.0.parquet": parquet_bytes(put), "CALL_111.5.parquet": parquet_bytes(call)}
    write_drop(tmp_path, CODE, files)
    df = FilesSource(tmp_path).load(CODE)
    assert df.schema == FRAME_SCHEMA
    for option_type in ("C", "P"):
        assert df.filter(pl.col("option_type") == option_type)["ts"].to_list() == [
            ts(14, 0),
            ts(14, 5),
        ]


def test_values_that_break_rules_are_kept_for_validation(tmp_path: Path) -> None:
    call = "ts,price,bid,ask\n2025-06-30T14:00:00Z,nan,1.4,1.3\n2025-06-30T14:05:00Z,-1,,1.3\n"
    write_drop(tmp_path, CODE, per_option_drop(CODE) | {"CALL_111.5.csv": call.encode()})
    df = FilesSource(tmp_path).load(CODE).filter(pl.col("option_type") == "C")
    assert df["last"][0] != df["last"][0]  # NaN kept
    assert df["bid"].to_list() == [1.4, None]
    assert df["last"][1] == -1.0


def test_list_codes_fingerprints_follow_content_not_mtime(tmp_path: Path) -> None:
    folder = write_drop(tmp_path, CODE, per_option_drop(CODE))
    write_drop(tmp_path, "3IN5", canonical_drop("3IN5"))
    source = FilesSource(tmp_path)
    before = source.list_codes()
    assert sorted(before) == ["3CN5", "3IN5"]

    put = folder / "PUT_110.0.csv"
    os.utime(put, (1_000_000_000, 1_000_000_000))  # touch: same bytes, new mtime
    (folder / "notes.txt").write_text("not data")
    assert source.list_codes() == before

    put.write_bytes(put.read_bytes().replace(b"0.78", b"0.79"))
    after = source.list_codes()
    assert after[CODE] != before[CODE]
    assert after["3IN5"] == before["3IN5"]

    put.rename(folder / "PUT_110.5.csv")  # same bytes, another option
    assert source.list_codes()[CODE] != after[CODE]


def test_list_codes_skips_hidden_invalid_and_empty_folders(tmp_path: Path) -> None:
    write_drop(tmp_path, CODE, per_option_drop(CODE))
    write_drop(tmp_path, ".staging", per_option_drop(CODE))
    write_drop(tmp_path, "not a code", per_option_drop(CODE))
    (tmp_path / "3MN5").mkdir()
    write_drop(tmp_path, "3WN5", {"README.txt": b"later"})
    assert list(FilesSource(tmp_path).list_codes()) == [CODE]
    assert FilesSource(tmp_path / "missing").list_codes() == {}


def test_unknown_code(tmp_path: Path) -> None:
    write_drop(tmp_path, CODE, per_option_drop(CODE))
    source = FilesSource(tmp_path)
    for code in ("3XN5", "..", f"../{tmp_path.name}/{CODE}", "3MN5"):
        with pytest.raises(UnknownWeeklyCodeError, match=CODE):
            source.load(code)


def test_default_root_follows_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEDGE_DATA_DIR", str(tmp_path))
    write_drop(tmp_path / "raw", CODE, per_option_drop(CODE))
    assert list(FilesSource().list_codes()) == [CODE]


def test_bid_without_ask_is_a_structural_error(tmp_path: Path) -> None:
    call = "ts,price,bid\n2025-06-30T14:00:00Z,1.2,1.1\n"
    write_drop(tmp_path, CODE, per_option_drop(CODE) | {"CALL_111.5.csv": call.encode()})
    with pytest.raises(ChainDataError) as caught:
        FilesSource(tmp_path).load(CODE)
    assert caught.value.location == Location("3CN5/CALL_111.5.csv", column="ask")


def test_unrecognised_file_is_an_error(tmp_path: Path) -> None:
    write_drop(tmp_path, CODE, per_option_drop(CODE) | {"quotes.csv": b"ts,price\nx,1\n"})
    with pytest.raises(ChainDataError, match="unrecognised file"):
        FilesSource(tmp_path).load(CODE)


def test_every_corpus_case_is_well_formed_apart_from_its_defect(tmp_path: Path) -> None:
    """The baselines the cases edit load and validate cleanly, so each error is the defect's."""
    write_drop(tmp_path, CODE, per_option_drop(CODE))
    write_drop(tmp_path, "3IN5", canonical_drop("3IN5"))
    write_drop(tmp_path, "3MN5", csv_as_parquet(canonical_drop("3MN5")))
    source = FilesSource(tmp_path)
    for code in source.list_codes():
        validate_chain(source.load(code), policy="reject")


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_input_names_file_row_and_column(tmp_path: Path, name: str) -> None:
    case: Case = CASES[name]
    case.write(tmp_path, CODE)
    with pytest.raises(ChainDataError) as caught:
        validate_chain(FilesSource(tmp_path).load(CODE), policy="reject")
    error = caught.value
    assert error.location == Location(f"{CODE}/{case.file}", case.row, case.column), str(error)
    assert case.expect in str(error)
    assert str(error).startswith(f"{CODE}/{case.file}")


def test_corpus_covers_the_promised_defects() -> None:
    assert len(CASES) >= 16
