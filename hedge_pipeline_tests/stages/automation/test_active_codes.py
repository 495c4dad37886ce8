"""The automation on a history: only the codes the selection's ``as_of`` found alive are active.

A real warehouse holds seven S&P 500 weekly codes of the ``history`` source around October
2008, and the real ``portfolio_selection`` asset is materialized with ``as_of`` 2008-10-15:
two codes have expired by then, one is not listed yet, four are alive. Every other code of the
source is a partition without data, as after ``hedge run`` on the whole history.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.orchestration.partitions import active_set, active_weekly_codes
from hedge_pipeline.orchestration.resources import ChainSourceResource, WarehouseResource
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sensors import new_weekly_codes_sensor
from hedge_pipeline.stages.market_data.sources.history import HistorySource
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.selection.templates import ENV_DIR
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import RAW_COLUMNS
from hedge_pipeline_tests.stages.automation.events import (
    portfolio_tick,
    report_ensemble,
    report_specialists,
)

EXPIRED = ["SP500-2008-10-03", "SP500-2008-10-10"]  # last quotes on 10-03 and 10-10
ALIVE = ["SP500-2008-10-17", "SP500-2008-10-24", "SP500-2008-10-31", "SP500-2008-11-07"]
UNLISTED = ["SP500-2008-11-14"]  # first quote on 10-17
AS_OF = "2008-10-15"
TEMPLATE = "daily_history"
NIGHT = "2026-11-23T02:00:00+00:00"


@pytest.fixture(scope="module")
def sp500() -> HistorySource:
    return HistorySource("sp500")


@pytest.fixture(scope="module")
def features(sp500: HistorySource) -> dict[str, pl.DataFrame]:
    """greeks_features rows of the seven codes, computed once for the module."""
    return {
        code: compute_features(sp500.load(code).select(RAW_COLUMNS))
        for code in EXPIRED + ALIVE + UNLISTED
    }


@pytest.fixture
def history(
    instance: dg.DagsterInstance,
    sp500: HistorySource,
    features: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> dg.DagsterInstance:
    """Every code of the source a partition, seven with data, a selection made at AS_OF."""
    monkeypatch.delenv(ENV_DIR, raising=False)
    instance.add_dynamic_partitions("weekly_code", list(sp500.list_codes()))
    with warehouse.connect(paths.warehouse_path()) as con:
        for code, frame in features.items():
            warehouse.replace_partition(con, code, {"greeks_features": frame})
    _select(instance, as_of=AS_OF)
    return instance


def _select(instance: dg.DagsterInstance, **config: str) -> dict:
    result = dg.materialize(
        [portfolio_selection],
        instance=instance,
        resources={"warehouse_db": WarehouseResource(path=str(paths.warehouse_path()))},
        run_config={"ops": {"portfolio_selection": {"config": {"template": TEMPLATE, **config}}}},
    )
    return result.asset_materializations_for_node("portfolio_selection")[0].metadata


def _nightly(instance: dg.DagsterInstance) -> list[dg.RunRequest]:
    from hedge_pipeline.definitions import defs

    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime.fromisoformat(NIGHT),
        repository_def=defs.get_repository_def(),
    )
    return defs.resolve_schedule_def("nightly_retrain").evaluate_tick(context).run_requests


def _new_codes_tick(instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"source": ChainSourceResource(kind="history", history="sp500")},
    )
    result = new_weekly_codes_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_the_active_codes_are_the_ones_the_selection_found_alive_at_its_as_of(history):
    active = active_set(history)
    assert active.codes == ALIVE == active_weekly_codes(history)
    assert active.as_of == "2008-10-15T23:59:59.999999+00:00"
    assert active.template == TEMPLATE
    assert len(history.get_dynamic_partitions("weekly_code")) == 1039


def test_the_nightly_schedule_retrains_only_the_alive_codes(history):
    requests = _nightly(history)
    assert sorted(r.partition_key for r in requests) == ALIVE
    assert all(r.tags["hedge/trigger"] == "nightly" for r in requests)


def test_a_code_stops_being_active_when_a_later_selection_leaves_it_out(history):
    # On 2008-10-20 the 10-17 code has expired and the 11-14 one is listed.
    _select(history, as_of="2008-10-20")
    later = ALIVE[1:] + UNLISTED
    assert active_weekly_codes(history) == later
    assert sorted(r.partition_key for r in _nightly(history)) == later
    # Its partition deleted, a code is not active either.
    history.delete_dynamic_partition("weekly_code", later[0])
    assert active_weekly_codes(history) == later[1:]
    # A selection without as_of makes every partition active again, as on the small sources.
    meta = _select(history)
    assert meta["as_of"].value.startswith("unset")
    assert len(active_weekly_codes(history)) == 1038
    assert active_set(history).as_of is None


def test_the_retrain_sensor_waits_for_the_alive_codes_only(history):
    report_specialists(history, *ALIVE[:3])
    partial = portfolio_tick(history)
    assert not partial.run_requests
    message = partial.skip_reason.skip_message
    assert "1/4 codes active at as_of 2008-10-15" in message and ALIVE[3] in message
    assert not any(code in message for code in EXPIRED + UNLISTED)

    report_specialists(history, ALIVE[3])
    [request] = portfolio_tick(history).run_requests
    assert request.tags["hedge/as_of"] == "2008-10-15T23:59:59.999999+00:00"
    # portfolio_training_job reads the table that selection wrote: no config to pass.
    assert not request.run_config
    from hedge_pipeline.definitions import defs

    job = defs.resolve_job_def("portfolio_training_job")
    assert "portfolio_selection" not in {
        k.to_user_string() for k in job.asset_layer.executable_asset_keys
    }
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        selected = con.sql("SELECT DISTINCT weekly_code FROM portfolio_selection ORDER BY 1")
        assert [code for (code,) in selected.fetchall()] == ALIVE

    # A retrain of the alive codes is a generation; expired codes never had a specialist.
    report_ensemble(history)
    report_specialists(history, *EXPIRED)
    assert not portfolio_tick(history, request.run_key).run_requests
    report_specialists(history, *ALIVE)
    [again] = portfolio_tick(history, request.run_key).run_requests
    assert again.run_key != request.run_key


def test_the_new_codes_sensor_registers_every_code_but_launches_only_active_ones(history):
    # The source lists every code; those that are not partitions yet are added, none is active.
    for code in ALIVE[1:2] + EXPIRED[:1] + UNLISTED:
        history.delete_dynamic_partition("weekly_code", code)
    first = _new_codes_tick(history)
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == sorted(
        ALIVE[1:2] + EXPIRED[:1] + UNLISTED
    )
    assert len(history.get_dynamic_partitions("weekly_code")) == 1039
    # ALIVE[1] is among the selection's active codes, so it is the only one that gets a run;
    # with no model trained yet, that is its market data.
    [request] = first.run_requests
    assert (request.partition_key, request.job_name) == (ALIVE[1], "market_data_job")
    assert not request.run_config

    # Once the lineage is trained, a new active code joins it, and the selection it makes again
    # keeps the as_of and template that define the active codes.
    history.report_runless_asset_event(dg.AssetMaterialization(asset_key="cnn_lstm_model"))
    history.delete_dynamic_partition("weekly_code", ALIVE[1])
    [joins] = _new_codes_tick(history, first.cursor).run_requests
    assert (joins.partition_key, joins.job_name) == (ALIVE[1], "new_code_job")
    config = joins.run_config["ops"]["portfolio_selection"]["config"]
    assert config == {"as_of": "2008-10-15T23:59:59.999999+00:00", "template": TEMPLATE}
    from hedge_pipeline.definitions import defs

    assert dg.validate_run_config(defs.resolve_job_def("new_code_job"), joins.run_config)


def test_an_inactive_codes_change_waits_until_it_is_active(history):
    first = _new_codes_tick(history)  # every code already a partition: recorded, no run
    assert not first.run_requests
    stale = first.cursor.replace(f'"{EXPIRED[0]}": "', f'"{EXPIRED[0]}": "old')
    second = _new_codes_tick(history, stale)
    assert not second.run_requests  # expired at as_of: not active
    assert second.cursor == stale
    _select(history)  # without as_of: every partition is active, the change is ingested
    [request] = _new_codes_tick(history, second.cursor).run_requests
    assert (request.partition_key, request.tags["hedge/trigger"]) == (EXPIRED[0], "changed")
