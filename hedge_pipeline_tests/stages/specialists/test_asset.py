"""``specialist_agents`` through Dagster: the smoke lineage of one weekly code, and refusals."""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.resources import ProfileResource
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME as CNN_LSTM
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.specialists.artifact import FORECASTS_FILE, SpecialistSpec
from hedge_pipeline.stages.specialists.asset import specialist_agents
from hedge_pipeline.tables import warehouse
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code, resources

CODE = "3CN5"


def _materialize(instance, asset, partition: str | None = None, **config):
    return dg.materialize(
        [asset],
        instance=instance,
        partition_key=partition,
        resources={
            **resources(),
            "launcher": TrainingLauncher(),
            "profile": ProfileResource(name="smoke"),
        },
        run_config={"ops": {asset.key.to_python_identifier(): {"config": config}}},
        raise_on_error=False,
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1  # refused once, never retried
    return failures[0].step_failure_data.error.message


@pytest.mark.slow
def test_smoke_specialist_registers_with_its_lineage_and_refuses_what_it_cannot_build(instance):
    materialize_code(instance, CODE)
    assert dg.materialize([portfolio_selection], instance=instance, resources=resources()).success

    # Before any CNN-LSTM exists, and for a code the portfolio did not select: clear refusals.
    message = _failure(_materialize(instance, specialist_agents, CODE))
    assert "cnn_lstm_model has no materialization with a registered version" in message
    instance.add_dynamic_partitions("weekly_code", ["3MN5"])
    message = _failure(_materialize(instance, specialist_agents, "3MN5", cnn_lstm_version=1))
    assert "portfolio_selection holds no option of weekly code '3MN5'" in message

    cnn = _materialize(instance, cnn_lstm_model, epochs=1)
    cnn_version = cnn.asset_materializations_for_node("cnn_lstm_model")[0].metadata["version"]
    result = _materialize(instance, specialist_agents, CODE)
    assert result.success
    metadata = result.asset_materializations_for_node("specialist_agents")[0].metadata
    client = registry.client()
    version = client.get_model_version(f"hedge-specialist-{CODE}", str(metadata["version"].value))
    assert version.aliases == [registry.CANDIDATE]
    assert version.tags["weekly_code"] == CODE
    assert version.tags["dagster_run_id"] == result.run_id
    assert version.tags["dagster_asset"] == "specialist_agents"
    assert version.tags[f"upstream.{CNN_LSTM}"] == str(cnn_version.value)
    assert version.tags["weights_sha256"] == metadata["weights_sha256"].value
    for key in ("risk_table_test_replay", "evaluation_test_replay", "pnl_histogram",
                "policy_behaviour", "calibration"):  # fmt: skip
        assert metadata[key].value.startswith(("| hedger |", "![", "| parameter |")), key
    # Every hedger's figures in the run's metrics; the headline against the strongest baseline.
    run = client.get_run(metadata["mlflow_run_id"].value).data.metrics
    for hedger in ("no_hedge", "bs_delta", "whalley_wilmott", "policy"):
        assert f"test_replay_{hedger}_es10" in run and f"test_simulated_{hedger}_es10" in run
    baseline = metadata["strongest_baseline"].value
    assert baseline in {"no_hedge", "bs_delta", "whalley_wilmott"}
    assert run[f"test_replay_{baseline}_es10"] == min(
        run[f"test_replay_{b}_es10"] for b in ("no_hedge", "bs_delta", "whalley_wilmott")
    )
    assert metadata["test_es10"].value == run["test_replay_policy_es10"]
    low, high = metadata["es10_vs_baseline_low"].value, metadata["es10_vs_baseline_high"].value
    assert low <= high
    assert metadata["es10_vs_baseline"].value == pytest.approx(
        run["test_replay_policy_es10"] - run[f"test_replay_{baseline}_es10"], abs=1e-9
    )
    assert metadata["test_windows"].value > 100
    assert 0 < metadata["test_blocks"].value <= metadata["test_windows"].value
    assert metadata["twins"].value == 200
    assert 0.0 <= metadata["twins_beating_bs_delta"].value <= 1.0
    simulated = run["test_simulated_policy_es10_vs_strongest_baseline"]
    assert (
        run["test_simulated_policy_es10_vs_strongest_baseline_low"]
        <= simulated
        <= run["test_simulated_policy_es10_vs_strongest_baseline_high"]
    )
    assert version.tags["strongest_baseline"] == baseline
    assert version.tags["evaluation"] == metadata["verdict"].value
    assert metadata["reloads_identically"].value is True
    logs = [e.message for e in instance.all_logs(result.run_id) if e.user_message]
    assert any(m.startswith("epoch 1/") for m in logs)

    # A template with a hedge option: the agent trades it, beside the delta-gamma baseline.
    assert dg.materialize(
        [portfolio_selection],
        instance=instance,
        resources=resources(),
        run_config={"ops": {"portfolio_selection": {"config": {"template": "delta_gamma_book"}}}},
    ).success
    result = _materialize(instance, specialist_agents, CODE)
    assert result.success
    metadata = result.asset_materializations_for_node("specialist_agents")[0].metadata
    assert "| bs_delta_gamma |" in metadata["evaluation_test_replay"].value
    assert metadata["reloads_identically"].value is True

    # The ablation: the same code retrained on the CNN-LSTM's forecast held at its mean over
    # the training bars, which its artifact (what the portfolio stages read) and spec carry.
    seen = _forecasts(client, metadata["version"].value)[1]
    result = _materialize(instance, specialist_agents, CODE, forecasts="training_mean")
    assert result.success, [
        e.step_failure_data.error for e in result.all_events if e.is_step_failure
    ]
    ablated = result.asset_materializations_for_node("specialist_agents")[0].metadata
    spec, held = _forecasts(client, ablated["version"].value)
    training = seen.filter(pl.col("ts").is_between(*_training_bounds()))
    assert 0 < training.height < seen.height
    assert held["ts"].equals(seen["ts"])
    assert held["prediction"].unique().to_list() == [training["prediction"].mean()]
    assert held["std"].unique().to_list() == [training["std"].mean()]
    assert spec.forecasts == "training_mean"
    params = client.get_run(ablated["mlflow_run_id"].value).data.params
    assert params["forecasts"] == "training_mean"


def _forecasts(client, version: int) -> tuple[SpecialistSpec, pl.DataFrame]:
    """A registered specialist's spec and the forecasts it trained on."""
    loaded = registry.load_version(client, f"hedge-specialist-{CODE}", version)
    return SpecialistSpec.read(loaded.directory), pl.read_parquet(loaded.directory / FORECASTS_FILE)


def _training_bounds() -> tuple:
    """The first and last bar of the code's training split, as the selection chose them."""
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        return warehouse.query(
            con,
            "SELECT train_start, train_end FROM portfolio_selection WHERE weekly_code = $1",
            [CODE],
        ).row(0)
