"""``specialist_agents`` through Dagster: the smoke lineage of one weekly code, and refusals."""

from __future__ import annotations

import dagster as dg
import pytest

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.resources import ProfileResource
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME as CNN_LSTM
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline.stages.specialists.asset import specialist_agents
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
    for key in ("risk_table_test_replay", "pnl_histogram", "policy_behaviour"):
        assert metadata[key].value.startswith(("| hedger |", "![")), key
    replay = metadata["test_replay"].value
    assert set(replay) == {"no_hedge", "bs_delta", "whalley_wilmott", "policy"}
    assert metadata["episodes"].value["test_replay"] > 100
    twins = metadata["test_replay_twins"].value
    assert (
        twins["twins"] == 200 and twins["windows_each"] == metadata["episodes"].value["test_replay"]
    )
    assert 0.0 <= twins["policy_beats_bs_delta_es10_share"] <= 1.0
    gain = metadata["test_simulated_es10_gain_over_bs_delta"].value
    low, high = gain["interval_95"]
    assert low <= gain["gain"] <= high
    simulated = metadata["test_simulated"].value
    assert gain["gain"] == pytest.approx(
        simulated["policy"]["es10"] - simulated["bs_delta"]["es10"], abs=1e-9
    )
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
    assert "bs_delta_gamma" in metadata["test_replay"].value
    assert metadata["reloads_identically"].value is True
