"""``cnn_lstm_model`` through Dagster: the smoke lineage, Pipes logs, registry tags, DDP."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.orchestration.identity import code_version
from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.resources import ProfileResource
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.selection.assets import portfolio_selection
from hedge_pipeline_tests.run_records import only_failure
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code, resources

CODES = ("3CN5", "3IN5")


def _materialize_model(
    instance: dg.DagsterInstance, devices: int, **config
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [cnn_lstm_model],
        instance=instance,
        resources={
            **resources(),
            "launcher": TrainingLauncher(devices=devices),
            "profile": ProfileResource(name="smoke"),
        },
        run_config={"ops": {"cnn_lstm_model": {"config": {"epochs": 2, **config}}}},
        raise_on_error=False,
    )


@pytest.fixture
def selected(instance):
    for code in CODES:
        materialize_code(instance, code)
    assert dg.materialize([portfolio_selection], instance=instance, resources=resources()).success
    return instance


def _artifacts(client, version) -> set[str]:
    return {a.path for a in client.list_artifacts(version.run_id, "model")}


@pytest.mark.slow
def test_smoke_lineage_registers_a_tagged_model_and_streams_epochs(selected):
    result = _materialize_model(selected, devices=1)
    metadata = result.asset_materializations_for_node("cnn_lstm_model")[0].metadata
    client = registry.client()
    version = client.get_model_version(MODEL_NAME, str(metadata["version"].value))
    assert version.aliases == [registry.CANDIDATE]
    assert version.tags["dagster_run_id"] == result.run_id
    assert version.tags["dagster_asset"] == "cnn_lstm_model"
    assert version.tags["code_version"] == code_version()
    assert len(version.tags["data_version"]) == 64
    assert version.tags["weights_sha256"] == metadata["weights_sha256"].value
    logs = [
        e.message
        for e in selected.all_logs(result.run_id)
        if e.user_message and e.message.startswith("epoch ")
    ]
    assert any(m.startswith("epoch 1/2") for m in logs) and any(
        m.startswith("epoch 2/2") for m in logs
    )
    # An MLflow pyfunc around the stage's own folder: weights and config, nothing else.
    assert "model/MLmodel" in _artifacts(client, version)
    stored = registry.stage_folder(Path(version.source.removeprefix("file://")))
    assert {p.name for p in stored.iterdir()} == {registry.WEIGHTS_FILE, "config.json"}


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_yields_the_same_artifacts(selected):
    single = _materialize_model(selected, devices=1)
    ddp = _materialize_model(selected, devices=2)
    client = registry.client()
    versions = [
        client.get_model_version(
            MODEL_NAME,
            str(r.asset_materializations_for_node("cnn_lstm_model")[0].metadata["version"].value),
        )
        for r in (single, ddp)
    ]
    assert versions[0].version != versions[1].version
    assert _artifacts(client, versions[0]) == _artifacts(client, versions[1])
    runs = [client.get_run(v.run_id) for v in versions]
    assert set(runs[0].data.metrics) == set(runs[1].data.metrics), set(runs[0].data.metrics) ^ set(
        runs[1].data.metrics
    )
    assert {a.path for a in client.list_artifacts(runs[1].info.run_id)} >= {"training_curves.png"}


@pytest.mark.slow
def test_diverging_training_fails_once_without_retries_and_registers_nothing(selected):
    result = _materialize_model(selected, devices=1, learning_rate=1e30)
    assert not result.success
    message = only_failure(result).step_failure_data.error.message
    assert "TrainingDiverged" in message and "nothing was registered" in message
    assert registry.client().search_model_versions(f"name = '{MODEL_NAME}'") == []
