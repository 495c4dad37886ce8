"""``portfolio_selection`` against a real warehouse holding two synthetic weekly codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from hedge_pipeline.orchestration.resources import WarehouseResource
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.selection.book import read_lifetimes
from hedge_pipeline.stages.selection.definitions import defs
from hedge_pipeline.stages.selection.report import template_info
from hedge_pipeline.stages.selection.templates import ENV_DIR, PACKAGED_DIR
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code

CODES = ("3CN5", "3IN5")


@pytest.fixture(scope="module")
def market_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic codes' market data, materialized once for the module (seconds each)."""
    base = tmp_path_factory.mktemp("portfolio") / "data"
    base.mkdir()
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        for key, value in paths.instance_env(base).items():
            env.setenv(key, value)
        for code in CODES:
            materialize_code(instance, code)
    return base / "warehouse.duckdb"


@pytest.fixture
def two_codes(
    instance: dg.DagsterInstance, market_data: Path, monkeypatch: pytest.MonkeyPatch
) -> dg.DagsterInstance:
    """This test's isolated warehouse, a copy of the module's, with both codes active."""
    monkeypatch.delenv(ENV_DIR, raising=False)
    shutil.copyfile(market_data, paths.warehouse_path())
    instance.add_dynamic_partitions("weekly_code", list(CODES))
    return instance


def _select(
    instance: dg.DagsterInstance,
    template: str = "atm_book",
    raise_on_error: bool = True,
    as_of: str | None = None,
) -> dg.ExecuteInProcessResult:
    config: dict[str, str] = {"template": template}
    if as_of is not None:
        config["as_of"] = as_of
    return dg.materialize(
        [portfolio_selection],
        instance=instance,
        resources={"warehouse_db": WarehouseResource(path=str(paths.warehouse_path()))},
        run_config={"ops": {"portfolio_selection": {"config": config}}},
        raise_on_error=raise_on_error,
    )


def _table() -> pl.DataFrame:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return con.sql("SELECT * FROM portfolio_selection ORDER BY ALL").pl()


def test_atm_book_writes_two_straddles_per_code_with_metadata_and_a_stable_version(two_codes):
    first = _select(two_codes)
    table = _table()
    assert table.height == 8
    for code in CODES:
        book = table.filter(pl.col("weekly_code") == code)
        assert book.height == 4
        assert sorted(book["option_type"]) == ["C", "C", "P", "P"]
        assert book["strike"].n_unique() == 2  # a call and a put at each of two strikes
        assert book["weight"].to_list() == [1.0] * 4
        assert not book["is_hedge_instrument"].any()
        assert (book["rows"] > 1000).all()
        bounds = book.select("train_start", "train_end", "val_start", "val_end")
        assert bounds.unique().height == 1
        row = book.row(0, named=True)
        assert (
            row["train_start"]
            < row["train_end"]
            < row["val_start"]
            < row["val_end"]
            < row["test_start"]
            < row["test_end"]
        )
    assert set(table["template"]) == {"atm_book"}

    meta = first.asset_materializations_for_node("portfolio_selection")[0].metadata
    assert meta["template"].value == "atm_book"
    assert "packaged" in meta["template_file"].value
    assert meta["options"].value == 8
    assert meta["options_per_code"].value == dict.fromkeys(CODES, 4)
    assert (meta["calls"].value, meta["puts"].value, meta["hedge_instruments"].value) == (4, 4, 0)
    assert meta["weights_sum"].value == 8.0
    assert meta["split_mode"].value == "per_code"
    assert all(code in meta["splits"].value for code in CODES)
    splits = meta["splits"].value.splitlines()
    assert splits[0].startswith("| weekly_code | train_start | train_end | val_start")
    assert len(splits) == 2 + len(CODES)
    checks = first.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("every_active_code_selected", True)]

    second = _select(two_codes)
    versions = [
        r.asset_materializations_for_node("portfolio_selection")[0].tags["dagster/data_version"]
        for r in (first, second)
    ]
    assert versions[0] == versions[1]
    assert _table().equals(table)


def test_as_of_keeps_only_the_codes_alive_then_and_records_them(two_codes):
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        lifetimes = read_lifetimes(con, list(CODES))
    first, second = lifetimes.sort("first_ts").rows(named=True)
    assert first["first_ts"] < second["first_ts"] < first["last_ts"] < second["last_ts"]

    # At the first code's last quote it has expired; the second is alive.
    result = _select(two_codes, as_of=first["last_ts"].isoformat())
    assert set(_table()["weekly_code"]) == {second["weekly_code"]}
    meta = result.asset_materializations_for_node("portfolio_selection")[0].metadata
    assert meta["as_of"].value == first["last_ts"].isoformat()
    assert meta["active_codes"].value == [second["weekly_code"]]
    (check,) = result.get_asset_check_evaluations()
    assert check.passed  # an expired code is not active, so not missing

    # While both are alive, both are selected, exactly as without as_of.
    _select(two_codes, as_of=second["first_ts"].isoformat())
    both = _table()
    unset = _select(two_codes)
    assert _table().equals(both)
    meta = unset.asset_materializations_for_node("portfolio_selection")[0].metadata
    assert meta["as_of"].value.startswith("unset")
    assert meta["active_codes"].value == sorted(CODES)


def test_an_as_of_with_no_code_alive_fails_and_names_the_span(two_codes):
    _select(two_codes)
    before = _table()
    result = _select(two_codes, as_of="1999-01-01", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "no weekly code is alive at as_of 1999-01-01T23:59:59.999999+00:00" in message
    assert _table().equals(before)


def test_delta_gamma_book_adds_one_hedge_option_per_code_outside_the_book(two_codes):
    two_codes.add_dynamic_partitions("weekly_code", ["3MN5"])  # active, not materialized yet
    result = _select(two_codes, "delta_gamma_book")
    table = _table()
    hedges = table.filter(pl.col("is_hedge_instrument"))
    assert sorted(hedges["weekly_code"]) == list(CODES)
    assert hedges["weight"].to_list() == [0.0, 0.0]
    book = table.filter(~pl.col("is_hedge_instrument"))
    assert not set(hedges["option_symbol"]) & set(book["option_symbol"])
    meta = result.asset_materializations_for_node("portfolio_selection")[0].metadata
    assert meta["hedge_instruments"].value == 2
    assert meta["skipped_codes"].value == {"3MN5": "no greeks_features rows yet"}
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN

    info = template_info("delta_gamma_book", paths.warehouse_path())
    assert "2 weekly codes in greeks_features" in info
    for symbol in table["option_symbol"]:
        assert symbol in info
    assert "ok rows per split: train" in info


def test_a_failing_selection_leaves_the_previous_table(two_codes, tmp_path, monkeypatch):
    _select(two_codes)
    before = _table()
    bad = json.loads((PACKAGED_DIR / "atm_book.json").read_text())
    bad["name"] = "unknown_code_book"
    bad["selection_criteria"]["weekly_codes"] = ["3CN5", "9ZZ9"]
    (tmp_path / "unknown_code_book.json").write_text(json.dumps(bad))
    monkeypatch.setenv(ENV_DIR, str(tmp_path))

    result = _select(two_codes, "unknown_code_book", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "'9ZZ9'" in message and "known: 3CN5, 3IN5" in message
    assert _table().equals(before)

    unknown = _select(two_codes, "no_such_template", raise_on_error=False)
    assert not unknown.success
    assert _table().equals(before)


def test_a_refused_write_rolls_back_to_the_previous_selection(two_codes):
    _select(two_codes)
    before = _table()
    incoming = before.with_columns(
        pl.col(pl.Datetime).dt.replace_time_zone("UTC"), template=pl.lit("other")
    )
    with (
        warehouse.connect(paths.warehouse_path()) as con,
        pytest.raises(duckdb.ConstraintException),
    ):
        warehouse.replace_rows(con, {"portfolio_selection": pl.concat([incoming, incoming])})
    assert _table().equals(before)


def test_the_area_definitions_load_with_the_shared_resources(data_dir):
    resources = dg.Definitions(resources={"warehouse_db": WarehouseResource.from_env()})
    merged = dg.Definitions.merge(defs, resources)
    dg.Definitions.validate_loadable(merged)
    (spec,) = merged.resolve_assets_def("portfolio_selection").specs
    assert spec.group_name == "market_data"
    assert [d.asset_key for d in spec.deps] == [dg.AssetKey("greeks_features")]
