"""The training launcher: its kinds' command lines, its settings, and the final-failure signal
carried through Pipes by a real child process.

No ``from __future__ import annotations``: Dagster reads the asset's config class off its
annotation."""

import json
import shlex
import sys
from pathlib import Path

import dagster as dg
import pytest

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.runtime.settings import Settings
from hedge_pipeline_tests.run_records import only_failure, retries

ENTRY = ["-m", "hedge_pipeline.training", "joint"]
TORCHRUN = ["-m", "torch.distributed.run"]


def test_one_device_is_a_plain_child_several_are_torchrun_standalone():
    assert TrainingLauncher().command("joint") == [sys.executable, *ENTRY]
    assert TrainingLauncher(devices=2).command("joint") == [
        sys.executable, *TORCHRUN, "--standalone", "--nproc-per-node=2", *ENTRY,
    ]  # fmt: skip
    assert TrainingLauncher(kind="torchrun").command("joint") == [
        sys.executable, *TORCHRUN, "--standalone", "--nproc-per-node=1", *ENTRY,
    ]  # fmt: skip


def test_several_nodes_make_this_node_rank_0_of_a_static_rendezvous():
    launcher = TrainingLauncher(
        kind="torchrun", devices=2, nnodes=3, rdzv_endpoint="10.0.0.5:29400"
    )
    rendezvous = ["--nnodes=3", "--master-addr=10.0.0.5", "--master-port=29400"]
    assert launcher.command("joint") == [
        sys.executable, *TORCHRUN, rendezvous[0], "--node-rank=0", *rendezvous[1:],
        "--nproc-per-node=2", *ENTRY,
    ]  # fmt: skip
    others = [shlex.split(c) for c in launcher.other_nodes("joint", "/shared/launch.json")]
    assert [c[c.index("--nnodes=3") + 1] for c in others] == ["--node-rank=1", "--node-rank=2"]
    assert all(c[-2:] == ["--extras", "/shared/launch.json"] for c in others)
    with pytest.raises(ValueError, match="set HEDGE_RDZV_ENDPOINT to node 0's host:port"):
        TrainingLauncher(nnodes=2).command("joint")


def test_a_remote_child_runs_the_cluster_interpreter_and_a_bad_kind_is_named():
    assert TrainingLauncher(kind="ray").command("joint") == ["python", *ENTRY]
    assert TrainingLauncher(kind="k8s", python="/opt/venv/bin/python", devices=2).command("joint")[
        :4
    ] == ["/opt/venv/bin/python", *TORCHRUN, "--standalone"]
    with pytest.raises(ValueError, match="'slurm': expected one of subprocess, torchrun, ray"):
        TrainingLauncher(kind="slurm").command("joint")


def test_the_launcher_follows_the_settings():
    settings = Settings.from_env(
        {
            "HEDGE_LAUNCHER": "ray",
            "HEDGE_RAY_ADDRESS": "http://head:8265",
            "HEDGE_GPUS": "1",
            "HEDGE_DEVICES": "2",
        }
    )
    launcher = TrainingLauncher.from_env(settings)
    assert (launcher.kind, launcher.ray_address, launcher.gpus, launcher.devices) == (
        "ray", "http://head:8265", 1, 2,
    )  # fmt: skip
    k8s = TrainingLauncher.from_env(
        Settings.from_env({"HEDGE_LAUNCHER": "k8s", "HEDGE_K8S_IMAGE": "hedge:1"})
    )
    assert (k8s.effective_kind(), k8s.k8s_image, k8s.k8s_data_claim) == ("k8s", "hedge:1", None)


# A child like the training module's: a session, and failures_are_final around the work.
CHILD = """
from hedge_pipeline.harness.session import open_session
from hedge_pipeline.harness.tracking import failures_are_final
with open_session([]) as session, failures_are_final(session):
    session.info("child started")
    if session.extras["outcome"] == "final":
        raise ValueError("bad configuration: cost must be >= 0")
    raise RuntimeError("a crash that a retry may fix")
"""


class ScriptLauncher(TrainingLauncher):
    """The real launcher, running :data:`CHILD` instead of a training stage."""

    def command(self, stage: str, python: str | None = None) -> list[str]:
        return [sys.executable, "-c", CHILD]


class Outcome(dg.Config):
    outcome: str


@dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
def trained(context: dg.AssetExecutionContext, config: Outcome, launcher: TrainingLauncher):
    return launcher.run(context, "demo", {"outcome": config.outcome})


def _run(instance: dg.DagsterInstance, outcome: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [trained],
        instance=instance,
        resources={"launcher": ScriptLauncher()},
        run_config={"ops": {"trained": {"config": {"outcome": outcome}}}},
        raise_on_error=False,
    )


@pytest.mark.slow
def test_a_final_failure_reported_through_pipes_fails_once_and_a_crash_is_retried(instance):
    final = _run(instance, "final")
    error = only_failure(final).step_failure_data
    assert error.error.message.strip().endswith(
        "ValueError: bad configuration: cost must be >= 0"
    ), error.error.message
    assert error.user_failure_data is not None  # a dg.Failure, not the Pipes error

    crash = _run(instance, "crash")
    assert not crash.success and len(retries(crash)) == 1


def test_a_launcher_that_cannot_be_set_up_fails_once_naming_what_is_missing(instance):
    result = dg.materialize(
        [trained],
        instance=instance,
        resources={"launcher": TrainingLauncher(kind="k8s", k8s_data_claim="hedge-data")},
        run_config={"ops": {"trained": {"config": {"outcome": "final"}}}},
        raise_on_error=False,
    )
    message = only_failure(result).step_failure_data.error.message
    assert "demo: the k8s launcher needs an image: set HEDGE_K8S_IMAGE" in message


def test_node_0_writes_the_extras_where_the_other_nodes_read_them(data_dir: Path):
    launcher = TrainingLauncher(nnodes=2, rdzv_endpoint="10.0.0.5:29400")
    context = dg.build_asset_context()
    launcher._announce_other_nodes(context, "joint", {"config": {"epochs": 3}})
    [written] = (data_dir / "launches").iterdir()
    assert written.name == f"{context.run_id}-joint.json"
    assert json.loads(written.read_text(encoding="utf-8")) == {"config": {"epochs": 3}}
    [command] = launcher.other_nodes("joint", str(written))
    assert "--node-rank=1" in command and command.endswith(f"--extras {written}")
