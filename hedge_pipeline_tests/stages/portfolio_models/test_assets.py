"""The whole smoke lineage, all 8 assets, through Dagster; lineage walk; the promotion gate."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.resources import ProfileResource
from hedge_pipeline.registry import lineage
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.portfolio_models.assets import (
    hedge_ensemble,
    joint_model,
    meta_controller,
)
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.specialists.asset import specialist_agents
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code, resources

CODES = ("3CN5", "3IN5")
# The textbook hedges of a portfolio of books without hedge options; the minimum-variance delta
# fitted on the training windows.
BASELINES = {"no_hedge", "bs_delta", "whalley_wilmott", "mv_delta"}


def _materialize(instance, assets, partition: str | None = None, **config):
    return dg.materialize(
        assets,
        instance=instance,
        partition_key=partition,
        resources={
            **resources(),
            "launcher": TrainingLauncher(),
            "profile": ProfileResource(name="smoke"),
        },
        run_config={"ops": {a.key.to_python_identifier(): {"config": config} for a in assets}}
        if config
        else None,
    )


def _report_json(client, run_id: str) -> dict:
    path = client.download_artifacts(run_id, "report/report.json")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def joint_members_table(result: dg.ExecuteInProcessResult) -> str:
    return _metadata(result, "joint_model")["members"]


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


@pytest.mark.slow
def test_smoke_lineage_registers_every_stage_walks_back_and_gates_promotion(instance):
    for code in CODES:
        materialize_code(instance, code)
    assert dg.materialize([portfolio_selection], instance=instance, resources=resources()).success
    assert _materialize(instance, [cnn_lstm_model], epochs=1).success
    specialist_runs = {}
    for code in CODES:
        result = _materialize(instance, [specialist_agents], code, hedge_option=False)
        specialist_runs[code] = result.run_id
    result = _materialize(instance, [meta_controller, joint_model, hedge_ensemble])
    assert result.success

    meta = _metadata(result, "meta_controller")
    assert meta["codes"] == list(CODES)
    for row in ("| bs_delta |", "| specialists |", "| **meta_controller** |"):
        assert row in meta["evaluation_test_replay"], meta["evaluation_test_replay"]
    assert meta["strongest_baseline"] in BASELINES
    assert meta["es10_vs_baseline_low"] <= meta["es10_vs_baseline_high"]
    assert "| version | seed |" in joint_members_table(result)
    joint = _metadata(result, "joint_model")
    assert len(joint["versions"]) == 2  # the smoke profile's ensemble size
    ensemble = _metadata(result, "hedge_ensemble")
    client = registry.client()
    report = _report_json(client, ensemble["mlflow_run_id"])
    tables = report["evaluation"]
    rows = set(tables["test_replay"])
    assert rows == {
        *BASELINES, "specialists", "specialists_netted", "meta_controller", "joint",
        "ensemble", "ensemble_without_cnn_lstm", "bs_delta_without_costs",
    }  # fmt: skip
    table = tables["test_replay"]
    # Every window's P&L of every hedger, for pooling and re-testing (bench lineage).
    windows = pl.read_parquet(
        client.download_artifacts(ensemble["mlflow_run_id"], "report/pnl_test_replay.parquet")
    )
    assert windows.columns == ["front_code", "block", *table]
    assert set(windows["front_code"]) <= set(CODES)
    assert windows.height == report["comparisons"]["test_replay"]["ensemble"]["windows"]
    assert table["bs_delta_without_costs"]["es10"] <= table["bs_delta"]["es10"]
    for split in ("test_replay", "test_simulated"):
        for hedger, by_code in report["tail_by_front"][split].items():
            assert set(by_code) <= set(CODES)
            shares = sum(row["es10_contribution"] for row in by_code.values())
            assert shares == pytest.approx(tables[split][hedger]["es10"], rel=1e-6)
    assert ensemble["tail_by_front_test_replay"].startswith("| hedger | front code |")
    # Every stage against the one it builds on, on the validation windows and both tests.
    assert set(report["stages"]) == {"validation", "test_replay", "test_simulated"}
    stages = report["stages"]["test_replay"]
    assert list(stages) == ["specialists", "meta_controller", "joint", "ensemble"]
    assert stages["joint"]["previous"]["baseline"] == table["meta_controller"]["es10"]
    assert stages["ensemble"]["previous"]["baseline"] == table["joint"]["es10"]
    assert ensemble["stages_test_replay"].startswith("| stage | builds on | ES10 ↓ |")
    columns = set(table["ensemble"])
    assert columns >= {"es10", "entropic", "sharpe", "sortino", "calmar", "max_drawdown",
                       "win_rate", "profit_rate", "var_compliance", "total_cost"}  # fmt: skip
    assert table["bs_delta"]["win_rate"] == 0.0  # BS delta against itself never wins
    # The headline: the ensemble against the strongest baseline, as numbers the UI plots.
    comparison = report["comparisons"]["test_replay"]
    baseline = comparison["baseline"]
    assert baseline in BASELINES
    assert table[baseline]["es10"] == min(table[b]["es10"] for b in BASELINES)
    assert ensemble["strongest_baseline"] == baseline
    assert ensemble["test_es10"] == table["ensemble"]["es10"]
    assert ensemble["strongest_baseline_es10"] == table[baseline]["es10"]
    assert ensemble["es10_vs_baseline"] == pytest.approx(
        table["ensemble"]["es10"] - table[baseline]["es10"]
    )
    low, high = ensemble["es10_vs_baseline_low"], ensemble["es10_vs_baseline_high"]
    assert low <= high and isinstance(ensemble["test_windows"], int)
    assert ensemble["test_blocks"] <= ensemble["test_windows"]
    assert ensemble["verdict"].startswith(f"ensemble ES10 {table['ensemble']['es10']:.4g} vs ")
    assert ensemble["evaluation_test_replay"].startswith("| hedger | ES10 ↓ | Δ vs ")
    assert ensemble["all_metrics_test_replay"].startswith("| hedger | es10 |")
    assert not any(isinstance(v, dict) for v in ensemble.values()), "raw JSON where a table serves"
    first = client.get_model_version("hedge-ensemble", str(ensemble["version"]))
    assert first.tags["promotion"] == ensemble["promotion"]
    assert first.tags["promotion_reason"] == ensemble["promotion_reason"]
    if ensemble["promotion"] == "candidate":
        assert "champion" not in first.aliases

    # An operator makes this version champion; walk its lineage back to the weekly codes.
    client.set_registered_model_alias("hedge-ensemble", "champion", first.version)
    tree = lineage.walk(client, "hedge-ensemble@champion")
    assert not lineage.broken_links(tree)
    joints = [edge.node for edge in tree.upstream]
    assert sorted(n.version for n in joints) == sorted(joint["versions"])
    metas = {edge.node.version for j in joints for edge in j.upstream}
    assert metas == {meta["version"]}
    found = lineage.partitions(tree)
    assert {p["weekly_code"] for p in found} == set(CODES)
    for p in found:
        version = client.get_model_version(p["model"], str(p["version"]))
        assert version.tags["dagster_run_id"] == specialist_runs[p["weekly_code"]]
        assert p["data_version"] == version.tags["data_version"] != ""
    cnn = {e.node.label for _, e in lineage.edges(tree) if e.node.name == "hedge-cnn-lstm"}
    assert len(cnn) == 1

    # The same models again cannot beat the champion by the margin: candidate, with why.
    again = _materialize(instance, [hedge_ensemble])
    second = _metadata(again, "hedge_ensemble")
    assert second["promotion"] == "candidate"
    assert "does not beat" in second["promotion_reason"]
    assert client.get_model_version_by_alias("hedge-ensemble", "champion").version == first.version

    # Specialists of another shape (the no-trade-band head): the champion cannot be rebuilt
    # around them (the stage used to fail loading its weights); the new ensemble registers as
    # a candidate, and the champion stays.
    for code in CODES:
        assert _materialize(instance, [specialist_agents], code, hedge_option=False, head="ntb")
    reshaped = _materialize(instance, [meta_controller, joint_model, hedge_ensemble])
    assert reshaped.success
    third = _metadata(reshaped, "hedge_ensemble")
    assert third["promotion"] == "candidate"
    assert any(
        why in third["promotion_reason"]
        for why in ("does not beat BS delta", "hedges with other specialists")
    ), third["promotion_reason"]
    assert client.get_model_version_by_alias("hedge-ensemble", "champion").version == first.version
