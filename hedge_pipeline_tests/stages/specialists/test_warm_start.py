"""Warm start on a history: a code's specialist starts from its predecessor's weights.

Three S&P 500 codes of the ``history`` source: SP500-2008-09-12 expires before
SP500-2008-10-17 is listed (2008-09-19), so it is the latter's predecessor; SP500-2008-09-19
expires on the very day 10-17 is listed, so it is not. The specialists train through Dagster
in the smoke profile with the ``daily_history`` template (which warm-starts).
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.resources import ProfileResource, WarehouseResource
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.history import HistorySource
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.selection.templates import ENV_DIR
from hedge_pipeline.stages.specialists.artifact import model_name
from hedge_pipeline.stages.specialists.asset import specialist_agents
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import RAW_COLUMNS

EARLIER, SAME_DAY, LATER = "SP500-2008-09-12", "SP500-2008-09-19", "SP500-2008-10-17"
SAME_DAY_LAST_BAR = "2008-09-19T20:00:00+00:00"  # 16:00 New York, daylight saving time


def _materialize(instance: dg.DagsterInstance, asset, partition: str | None = None, **config):
    result = dg.materialize(
        [asset],
        instance=instance,
        partition_key=partition,
        resources={
            "warehouse_db": WarehouseResource(path=str(paths.warehouse_path())),
            "launcher": TrainingLauncher(),
            "profile": ProfileResource(name="smoke"),
        },
        run_config={"ops": {asset.key.to_python_identifier(): {"config": config}}},
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_step_failure]
    return result


def _tags(code: str) -> dict[str, str]:
    client = registry.client()
    return registry.find_version(client, model_name(code)).tags


@pytest.mark.slow
def test_a_specialist_starts_from_the_code_that_expired_before_it_was_listed(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv(ENV_DIR, raising=False)
    source = HistorySource("sp500")
    codes = [EARLIER, SAME_DAY, LATER]
    instance.add_dynamic_partitions("weekly_code", codes)
    with warehouse.connect(paths.warehouse_path()) as con:
        for code in codes:
            features = compute_features(source.load(code).select(RAW_COLUMNS))
            warehouse.replace_partition(con, code, {"greeks_features": features})
    _materialize(instance, portfolio_selection, template="daily_history")
    _materialize(instance, cnn_lstm_model, epochs=1)

    _materialize(instance, specialist_agents, EARLIER)
    first = _tags(EARLIER)
    assert first["warm_start"] == "none"  # nothing earlier is registered
    assert first["underlying"] == "SP500" and first["last_bar"].startswith("2008-09-12T20:00")

    # 09-19 was listed on 08-22, while 09-12 was alive: not its predecessor either.
    _materialize(instance, specialist_agents, SAME_DAY)
    assert _tags(SAME_DAY)["warm_start"] == "none"
    # 09-19 expires at 10-17's listing bar: alive together, so the predecessor is 09-12.
    _materialize(instance, specialist_agents, LATER)
    later = _tags(LATER)
    assert later["warm_start"] == f"{model_name(EARLIER)}:v1", later
    assert later["first_bar"] == SAME_DAY_LAST_BAR == _tags(SAME_DAY)["last_bar"]

    # A predecessor of another shape (here the other head) is not loaded, and the tag says so.
    _materialize(instance, specialist_agents, LATER, head="ntb")
    assert _tags(LATER)["warm_start"] == "none"

    # Asked not to, it starts from BS delta and carries no warm_start tag.
    _materialize(instance, specialist_agents, LATER, warm_start=False)
    assert "warm_start" not in _tags(LATER)


def test_the_lookup_reads_only_bars_of_the_code_itself():
    from hedge_pipeline.stages.specialists.warm_start import bar_tags

    features = compute_features(HistorySource("sp500").load(LATER).select(RAW_COLUMNS))
    tags = bar_tags(features)
    assert tags == {
        "underlying": "SP500",
        "first_bar": "2008-09-19T20:00:00+00:00",
        "last_bar": "2008-10-17T20:00:00+00:00",
    }
    assert pl.Series([tags["first_bar"], tags["last_bar"]]).is_sorted()
