"""The market-data assets against a real DuckDB file and real in-process Dagster runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.assets import FEATURE_CHECKS, RAW_CHECKS, greeks_features
from hedge_pipeline.stages.market_data.sources.synthetic import WEEKLY_CODES, SyntheticSource
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.conftest import small_book, write_drop
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code, resources


def _counts(table: str) -> dict[str, int]:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        rows = con.execute(f"SELECT weekly_code, count(*) FROM {table} GROUP BY 1").fetchall()
    return dict(rows)


def _hash(table: str, code: str) -> str:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return warehouse.partition_hash(con, table, code)


def _check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (e.asset_check_key.asset_key.to_user_string(), e.asset_check_key.name): e.passed
        for e in result.get_asset_check_evaluations()
    }


@pytest.mark.slow
def test_all_synthetic_codes_materialize_with_exact_counts_and_passing_checks(instance):
    source = SyntheticSource()
    for code in WEEKLY_CODES:
        result = materialize_code(instance, code)
        checks = _check_results(result)
        assert all(checks.values()), checks
        assert {name for asset, name in checks if asset == "raw_option_chains"} == set(RAW_CHECKS)
        assert {name for asset, name in checks if asset == "greeks_features"} == set(FEATURE_CHECKS)
    expected = {code: source.load(code).height for code in WEEKLY_CODES}
    assert _counts("raw_option_chains") == expected
    assert _counts("greeks_features") == expected
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        (options,) = con.execute(
            "SELECT count(DISTINCT option_symbol) FROM raw_option_chains"
        ).fetchone()
        (iv_ok,) = con.execute(
            "SELECT avg((iv_status = 'ok')::INT) FROM greeks_features"
        ).fetchone()
    assert options == 277
    assert iv_ok > 0.95


def test_rematerializing_a_partition_leaves_the_same_rows(instance):
    first = materialize_code(instance, "3IN5")
    before = {t: _hash(t, "3IN5") for t in ("raw_option_chains", "greeks_features")}
    second = materialize_code(instance, "3IN5")
    after = {t: _hash(t, "3IN5") for t in ("raw_option_chains", "greeks_features")}
    assert before == after
    versions = [
        r.asset_materializations_for_node("raw_option_chains")[0].tags["dagster/data_version"]
        for r in (first, second)
    ]
    assert versions[0] == versions[1] == before["raw_option_chains"]


def test_materialization_metadata_describes_the_partition(instance):
    result = materialize_code(instance, "3MN5")
    raw = result.asset_materializations_for_node("raw_option_chains")[0].metadata
    feats = result.asset_materializations_for_node("greeks_features")[0].metadata
    assert raw["dagster/row_count"].value == _counts("raw_option_chains")["3MN5"]
    assert raw["options"].value > 20
    assert raw["first_ts"].value < raw["last_ts"].value
    assert (
        raw["preview"].value.splitlines()[0]
        == "| ts | option_symbol | strike | bid | ask | underlying_price |"
    )
    rates = feats["iv_status_rates"].value
    assert set(rates) == {"ok", "below_intrinsic", "above_max", "no_quote", "expired"}
    assert abs(sum(rates.values()) - 1.0) < 1e-12
    assert feats["iv_failure_rate"].value == pytest.approx(1.0 - rates["ok"])


def test_features_are_consistent_with_the_raw_quotes(instance):
    materialize_code(instance, "3WN5")
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        f = warehouse.read_partition(con, "greeks_features", "3WN5")
    ok = f.filter(pl.col("iv_status") == "ok")
    assert (ok["mid"] - (ok["bid"] + ok["ask"]) / 2).abs().max() < 1e-12
    # Tick rounding in the last minutes implies huge vols deep in the wings; the bulk is sane.
    assert ok["iv"].min() > 0.01 and ok["iv"].quantile(0.99) < 1.0
    calls = ok.filter(pl.col("option_type") == "C")
    assert calls["delta"].min() >= 0.0 and calls["delta"].max() <= 1.0
    assert ok["gamma"].min() >= 0.0
    assert f["tau"].min() >= 0.0
    rv = f["realized_vol"].drop_nulls()
    assert 0.05 < rv.median() < 1.0
    assert f["atm_iv"].null_count() < 0.05 * f.height


def test_quarantine_policy_stores_the_good_rows_and_sets_the_bad_aside(
    instance, data_dir: Path, synthetic_code_frame
):
    book = small_book(synthetic_code_frame)
    bad_index = 3
    crossed = book.with_columns(
        ask=pl.when(pl.int_range(pl.len()) == bad_index).then(pl.col("bid") - 0.01).otherwise("ask")
    )
    write_drop(crossed, data_dir / "raw", "QQ1")
    result = materialize_code(
        instance, "QQ1", kind="files", raw_dir=data_dir / "raw", bad_rows="quarantine"
    )
    assert result.success
    meta = result.asset_materializations_for_node("raw_option_chains")[0].metadata
    assert meta["quarantined_rows"].value == 1
    assert meta["quarantined_by_column"].value == {"bid": 1}
    assert _counts("raw_option_chains")["QQ1"] == book.height - 1
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        (reason,) = con.execute("SELECT reason FROM quarantined_quotes").fetchone()
    assert "crossed quote" in reason


def _failure(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [e for e in result.all_events if e.is_step_failure]
    return event.step_failure_data.error.message.strip()


def test_a_code_added_by_hand_that_the_source_lacks_fails_at_once_naming_its_codes(instance):
    # What "Add partition" in the UI does with a typo: the partition exists, the source not.
    result = materialize_code(instance, "3CN6", raise_on_error=False)
    assert not result.success
    message = _failure(result)
    assert message.startswith("dagster._core.definitions.events.Failure: ")
    line = message.removeprefix("dagster._core.definitions.events.Failure: ")
    assert line == "unknown weekly code '3CN6'; the source holds: " + ", ".join(WEEKLY_CODES)
    attempts = [e for e in result.all_events if e.event_type_value == "STEP_RESTARTED"]
    assert not attempts, "a code the source lacks must not be retried"
    # The features of a code the warehouse lacks name the codes it does hold.
    materialize_code(instance, "3CN5")
    alone = dg.materialize(
        [greeks_features],
        partition_key="3CN6",
        instance=instance,
        resources=resources(),
        raise_on_error=False,
    )
    assert _failure(alone).endswith(
        "raw_option_chains holds no rows for weekly code '3CN6' (materialize it first, or "
        "check the code); it holds: 3CN5"
    )
