"""Incremental work (issue 7, item 6): a new weekly code reruns only what it has to.

One code is a file drop; the smoke lineage is built for it in-process through the code
location's own jobs, with the automation deciding what runs where it does in production:
``new_weekly_codes_sensor`` (codes become partitions, market data), ``hedge run``'s steps for the
models, ``portfolio_retrain_sensor`` for the portfolio stages. Then a second code is dropped and
only what the two sensors ask for is executed. Counting materializations per (asset, partition)
in the instance, the new code's market data and specialist and the portfolio-level assets
must be the only new ones; the first code's materializations and warehouse rows must not
change, and the retrained portfolio must cover the new code. A champion ensemble built on the
first code alone cannot be compared with the new one: the new ensemble stays a candidate.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.tables import warehouse
from hedge_pipeline.tables.schema import LINEAGE_COLUMNS
from hedge_pipeline_tests.conftest import DESIGN_ASSETS, write_drop

pytestmark = [pytest.mark.slow]

# One code before: every further code would add a specialist training (~20 s of CPU) and prove
# nothing the first does not.
OLD = ("3CN5",)
NEW = "3IN5"
PORTFOLIO_LEVEL = ("portfolio_selection", "meta_controller", "joint_model", "hedge_ensemble")
TABLES = ("raw_option_chains", "greeks_features", "portfolio_selection")


@pytest.fixture
def location(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    """The code location as a code server loads it for this data directory (files source,
    smoke profile): ``hedge_pipeline/definitions.py`` executed afresh, so its resources read
    this test's environment whatever another test imported before."""
    monkeypatch.setenv("HEDGE_SOURCE", "files")
    monkeypatch.setenv("HEDGE_PROFILE", "smoke")
    spec = importlib.util.find_spec("hedge_pipeline.definitions")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.defs


def _drop(code: str) -> None:
    frame = SyntheticSource().load(code).drop(LINEAGE_COLUMNS)
    write_drop(frame, paths.raw_dir(), code)


class Automation:
    """Ticks the location's sensors as the daemon would and executes what they request."""

    def __init__(self, location: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.location = location
        self.instance = instance
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str) -> list[dg.RunRequest]:
        sensor = self.location.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            resources={key: self.location.resources[key] for key in sensor.required_resource_keys},
        )
        result = sensor(context)
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        self.cursors[name] = result.cursor
        return list(result.run_requests or [])

    def execute(self, request: dg.RunRequest, sensor: str) -> dg.DagsterRun:
        job_name = request.job_name or self.location.resolve_sensor_def(sensor).job_name
        result = self.location.resolve_job_def(job_name).execute_in_process(
            instance=self.instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/sensor_name": sensor},
        )
        assert result.success, job_name
        return result.dagster_run

    def hedge_run(self, asset: str, partition: str | None = None, **config) -> None:
        """A step of ``hedge run`` for the models no sensor launches: ``specialists_job`` for
        one code, else the global asset job on one asset."""
        job = (
            self.location.resolve_job_def("specialists_job")
            if partition
            else self.location.resolve_implicit_global_asset_job_def()
        )
        result = job.execute_in_process(
            instance=self.instance,
            partition_key=partition,
            asset_selection=None if partition else [dg.AssetKey(asset)],
            run_config={"ops": {asset: {"config": config}}} if config else None,
        )
        assert result.success, asset


def _materializations(instance: dg.DagsterInstance) -> Counter[tuple[str, str | None]]:
    counts: Counter[tuple[str, str | None]] = Counter()
    for asset in DESIGN_ASSETS:
        for record in instance.fetch_materializations(dg.AssetKey(asset), limit=10_000).records:
            counts[asset, record.partition_key] += 1
    return counts


def _latest_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _partition_hashes() -> dict[tuple[str, str], str]:
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return {
            (table, code): warehouse.partition_hash(con, table, code)
            for table in TABLES
            for code in (*OLD, NEW)
        }


def test_a_new_code_runs_only_its_partitions_and_the_portfolio_stages(
    data_dir: Path, instance: dg.DagsterInstance, location: dg.Definitions, mlflow_client
):
    for code in OLD:
        _drop(code)
    auto = Automation(location, instance)

    # A fresh install: the codes become partitions and get market data, nothing else.
    first = auto.tick("new_weekly_codes_sensor")
    assert sorted((r.partition_key, r.job_name) for r in first) == [
        (code, "market_data_job") for code in OLD
    ]
    for request in first:
        auto.execute(request, "new_weekly_codes_sensor")
    # What `hedge run --select portfolio`, `cnn_lstm` and `specialists` do once.
    auto.hedge_run("portfolio_selection")
    auto.hedge_run("cnn_lstm_model", epochs=1)
    for code in OLD:
        auto.hedge_run("specialist_agents", code)
    [generation] = auto.tick("portfolio_retrain_sensor")
    auto.execute(generation, "portfolio_retrain_sensor")
    assert auto.tick("portfolio_retrain_sensor") == []

    before = _materializations(instance)
    per_code = ("raw_option_chains", "greeks_features", "specialist_agents")
    assert before == Counter(
        {(a, c): 1 for a in per_code for c in OLD}
        | {(a, None): 1 for a in (*PORTFOLIO_LEVEL, "cnn_lstm_model")}
    )
    # The first ensemble is the champion (the gate's call in production; an operator's here,
    # since a smoke model may not beat BS delta): the next one must face it.
    first_ensemble = _latest_metadata(instance, "hedge_ensemble")["version"]
    mlflow_client.set_registered_model_alias("hedge-ensemble", "champion", str(first_ensemble))
    hashes = _partition_hashes()
    runs_before = {r.run_id for r in instance.get_runs()}

    _drop(NEW)
    [joins] = auto.tick("new_weekly_codes_sensor")
    assert (joins.partition_key, joins.job_name) == (NEW, "new_code_job")
    assert sorted(instance.get_dynamic_partitions("weekly_code")) == sorted((*OLD, NEW))
    new_run = auto.execute(joins, "new_weekly_codes_sensor")
    [portfolio] = auto.tick("portfolio_retrain_sensor")
    assert portfolio.run_key != generation.run_key
    portfolio_run = auto.execute(portfolio, "portfolio_retrain_sensor")
    # Nothing more is due: the sensors are quiet again.
    assert auto.tick("new_weekly_codes_sensor") == []
    assert auto.tick("portfolio_retrain_sensor") == []

    # Exactly one more materialization of each of these, and of nothing else.
    expected = Counter({(a, NEW): 1 for a in per_code} | {(a, None): 1 for a in PORTFOLIO_LEVEL})
    assert _materializations(instance) == before + expected
    assert {r.run_id for r in instance.get_runs()} - runs_before == {
        new_run.run_id,
        portfolio_run.run_id,
    }

    # The old codes' rows (market data and their books) are exactly as they were.
    now = _partition_hashes()
    assert {k: v for k, v in now.items() if k[1] in OLD} == {
        k: v for k, v in hashes.items() if k[1] in OLD
    }
    assert all(hashes[table, NEW].endswith(":0") for table in TABLES)  # no rows before
    assert all(not now[table, NEW].endswith(":0") for table in TABLES)
    meta = _latest_metadata(instance, "meta_controller")
    assert meta["codes"] == sorted((*OLD, NEW))
    ensemble = _latest_metadata(instance, "hedge_ensemble")
    assert ensemble["promotion"] == "candidate"
    assert "covers other weekly codes" in ensemble["promotion_reason"]
    champion = mlflow_client.get_model_version_by_alias("hedge-ensemble", "champion")
    assert champion.version == first_ensemble
