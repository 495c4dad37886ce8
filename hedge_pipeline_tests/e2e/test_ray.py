"""Training on a Ray cluster through Dagster (issue 20, item 1): a Ray head on loopback, with
token authentication as a real cluster has it, and the training stages submitted to it as
Ray jobs by the ``ray`` launcher.

Shown here: the smoke lineage's training stages run as Ray jobs and their per-epoch lines reach
the Dagster event log (and, as ``hedge run`` prints them, on the console, with the time left);
``ray job stop`` in mid-training is retried by the step's RetryPolicy,
which resumes from the checkpoint and registers exactly one version; a diverging run fails
once, without retries, its final failure carried by Pipes from the job's log.

The head is started once for the module (about 10 s) and stopped with ``ray stop``, which
ends every Ray process of this user: nothing else runs Ray on a test machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.orchestration.partitions import weekly_code_partitions
from hedge_pipeline.orchestration.resources import ProfileResource
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.artifact import MODEL_NAME
from hedge_pipeline.stages.cnn_lstm.asset import cnn_lstm_model
from hedge_pipeline.stages.portfolio_models.assets import (
    hedge_ensemble,
    joint_model,
    meta_controller,
)
from hedge_pipeline.stages.specialists.artifact import model_name
from hedge_pipeline.stages.specialists.asset import specialist_agents
from hedge_pipeline_tests.reliability.conftest import (  # noqa: F401 (fixtures)
    CODES,
    _warehouse_template,
    assert_versions_intact,
    last_epoch,
    wait_for,
    warehouse,
)
from hedge_pipeline_tests.run_records import only_failure, retries
from hedge_pipeline_tests.stages.market_data.helpers import resources

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("warehouse"),
    pytest.mark.xdist_group("ray"),  # one worker, one head: `ray stop` ends every head
    # dagster-ray 0.4.8 and Ray 2.60's own deprecations: not ours to fix.
    pytest.mark.filterwarnings("ignore:AssetExecutionContext.dagster_run:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A one-node Ray cluster on 127.0.0.1 with a token of its own; yields the dashboard URL.

    Clients find the token as on a real cluster: ``RAY_AUTH_MODE=token`` and
    ``RAY_AUTH_TOKEN_PATH`` in their environment (this process's, for the test's duration).
    """
    if shutil.which(RAY) is None:
        pytest.skip("ray is not installed")
    folder = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must fit
    token = folder / "token"
    token.write_text(secrets.token_hex(32), encoding="utf-8")
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    dashboard = _free_port()
    env = {**os.environ, **auth, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    command = [
        RAY, "start", "--head", "--num-cpus=2", "--node-ip-address=127.0.0.1",
        f"--port={_free_port()}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--temp-dir={folder / 'session'}",
        "--disable-usage-stats",
    ]  # fmt: skip
    try:
        _start_head(command, env)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in auth.items():
                patch.setenv(key, value)
            address = f"http://127.0.0.1:{dashboard}"
            _wait_until_jobs_run(address)
            yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _start_head(command: list[str], env: dict[str, str], attempts: int = 3) -> None:
    """``ray start --head``, tried up to ``attempts`` times.

    Ray waits a fixed 30 s (``raylet_start_wait_time_s`` in ``ray/_private/node.py``, not
    configurable) for the raylet to register with the GCS, and gives up: on a 2-core CI machine
    with the other test worker busy, that happened once. A failed attempt's processes are
    stopped before the next; the last failure's output is the assertion message.
    """
    failures: list[str] = []
    while len(failures) < attempts:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        if started.returncode == 0:
            return
        failures.append(started.stdout + started.stderr)
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
        if "timed out during startup" not in failures[-1]:
            break  # not the start-up race: retrying would hide a real failure
    raise AssertionError(f"ray start failed {len(failures)} time(s); the last:\n{failures[-1]}")


def _wait_until_jobs_run(address: str, timeout: float = 180) -> None:
    """Until a trivial job runs: the dashboard answers before its job agent has registered
    ("No available agent to submit job"), seconds later on a loaded machine."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)

    def succeeded() -> bool:
        try:
            job = client.submit_job(entrypoint="true")
        except RuntimeError as error:
            if "No available agent" in str(error):
                return False
            raise
        status = wait_for(
            lambda: (s := client.get_job_status(job)).is_terminal() and s, 60, "a trivial job"
        )
        assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)
        return True

    wait_for(succeeded, timeout, "the Ray head's job agent", every=1.0)


def _materialize(
    address: str, instance: dg.DagsterInstance, assets, partition: str | None = None, **config
) -> dg.ExecuteInProcessResult:
    launcher = TrainingLauncher(kind="ray", ray_address=address, python=sys.executable)
    return dg.materialize(
        assets,
        instance=instance,
        partition_key=partition,
        resources={**resources(), "launcher": launcher, "profile": ProfileResource(name="smoke")},
        run_config={"ops": {a.key.to_python_identifier(): {"config": config} for a in assets}}
        if config
        else None,
        raise_on_error=False,
    )


def _logs(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id) if e.user_message]


def _ray_jobs(address: str) -> dict[str, str]:
    """Submission id → status of every job the head has run."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    return {job.submission_id: str(job.status) for job in client.list_jobs()}


def test_smoke_lineage_training_stages_run_as_ray_jobs_with_epochs_in_the_event_log(
    ray_head: str,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    monkeypatch.setenv("HEDGE_PROGRESS", "1")  # as `hedge run` sets it: epoch lines printed
    # The warehouse is a copy: its codes are not partitions of this test's instance yet.
    instance.add_dynamic_partitions(weekly_code_partitions.name, list(CODES))
    runs = [_materialize(ray_head, instance, [cnn_lstm_model], epochs=2)]
    runs += [
        _materialize(ray_head, instance, [specialist_agents], code, hedge_option=False)
        for code in CODES
    ]
    runs.append(_materialize(ray_head, instance, [meta_controller, joint_model, hedge_ensemble]))
    for result in runs:
        assert result.success, _logs(instance, result.run_id)[-10:]

    jobs = _ray_jobs(ray_head)
    materializations = [m for r in runs for m in r.get_asset_materialization_events()]
    assert len(materializations) == 6  # cnn_lstm, two specialists, meta, joint, ensemble
    job_ids = [m.materialization.metadata["Ray Job ID"].value for m in materializations]
    assert len(set(job_ids)) == 6 and all(jobs[j] == "SUCCEEDED" for j in job_ids), jobs

    stages = {"cnn_lstm_model": 0, "specialist_agents": 1, "meta_controller": 3}
    for asset, index in stages.items():
        epochs = [m for m in _logs(instance, runs[index].run_id) if m.startswith("epoch 1/")]
        assert epochs, (asset, _logs(instance, runs[index].run_id)[-10:])
    progress = capsys.readouterr().out
    assert "  cnn_lstm: epoch 1/2 val_loss" in progress, progress
    assert "  specialist 3IN5: epoch 1/" in progress and "left" in progress, progress
    client = registry.client()
    for name in (MODEL_NAME, *(model_name(c) for c in CODES), "hedge-meta-controller"):
        [version] = registry.version_numbers(client, name)
        tags = client.get_model_version(name, str(version)).tags
        assert tags["dagster_run_id"] in {r.run_id for r in runs}


def test_a_stopped_ray_job_is_retried_and_resumes_from_its_checkpoint(
    ray_head: str, instance: dg.DagsterInstance
):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    before = set(_ray_jobs(ray_head))
    stopped: list[str] = []

    def stop_after_first_epoch() -> None:
        wait_for(lambda: last_epoch("cnn_lstm") >= 1, 300, "a cnn_lstm checkpoint", every=0.1)
        running = [j for j, s in _ray_jobs(ray_head).items() if j not in before and s == "RUNNING"]
        stopped.extend(running)
        for job in running:
            client.stop_job(job)

    stopper = threading.Thread(target=stop_after_first_epoch)
    stopper.start()
    result = _materialize(ray_head, instance, [cnn_lstm_model], epochs=3)
    stopper.join(timeout=60)
    logs = _logs(instance, result.run_id)
    assert result.success, logs[-10:]
    assert len(stopped) == 1, stopped
    assert len(retries(result)) == 1
    assert _ray_jobs(ray_head)[stopped[0]] == "STOPPED"
    starts = [m.split(" on cpu")[0] for m in logs if m.startswith("training ")]
    assert starts[0] == "training from scratch" and starts[1].startswith(
        "training resuming after epoch"
    ), starts
    [materialization] = result.asset_materializations_for_node("cnn_lstm_model")
    metadata = materialization.metadata
    assert metadata["start_epoch"].value > 1
    assert assert_versions_intact(MODEL_NAME) == [metadata["version"].value]


def test_a_diverging_ray_job_fails_once_without_retries(
    ray_head: str, instance: dg.DagsterInstance
):
    result = _materialize(ray_head, instance, [cnn_lstm_model], epochs=2, learning_rate=1e30)
    assert not result.success
    message = only_failure(result).step_failure_data.error.message
    assert "TrainingDiverged" in message and "nothing was registered" in message
    assert registry.version_numbers(registry.client(), MODEL_NAME) == []
