"""The training pod's spec, checked the way ``PipesK8sClient`` uses it: through dagster-k8s's
``build_pod_body``, which validates every key against the Kubernetes client's models (a
misspelt ``volumeMount`` raises there, as the API server would refuse it)."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import pytest
from dagster_k8s.pipes import build_pod_body

from hedge_pipeline.orchestration.k8s import GPU_RESOURCE, pod_spec

COMMAND = ["python", "-m", "hedge_pipeline.training", "joint"]
PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "ctx", "DAGSTER_PIPES_MESSAGES": "msgs"}


def _pod(**overrides) -> kubernetes.client.V1Pod:
    spec = pod_spec(
        **{
            "image": "registry.example/hedge:abc123",
            "command": COMMAND,
            "env": {"HEDGE_DATA_DIR": "/shared/hedge", "HEDGE_PROFILE": "full"},
            "data_dir": Path("/shared/hedge"),
            "data_claim": "hedge-data",
            **overrides,
        }
    )
    return build_pod_body(
        pod_name="hedge-joint-1",
        image=None,
        command=None,
        env_vars=PIPES_ENV,
        base_pod_meta=None,
        base_pod_spec=spec,
    )


def test_a_gpu_pod_has_its_image_command_limits_env_and_the_shared_data_dir():
    pod = _pod(gpus=2, cpu="8", memory="32Gi")
    assert isinstance(pod, kubernetes.client.V1Pod)
    assert pod.spec.restart_policy == "Never"
    [container] = pod.spec.containers
    assert (container.image, container.command) == ("registry.example/hedge:abc123", COMMAND)
    assert container.resources.limits == {"cpu": "8", "memory": "32Gi", GPU_RESOURCE: "2"}
    assert container.resources.requests == {"cpu": "8", "memory": "32Gi"}
    env = {e.name: e.value for e in container.env}
    assert env == {"HEDGE_DATA_DIR": "/shared/hedge", "HEDGE_PROFILE": "full", **PIPES_ENV}
    [mount] = container.volume_mounts
    [volume] = pod.spec.volumes
    assert (mount.name, mount.mount_path) == (volume.name, "/shared/hedge")
    assert volume.persistent_volume_claim.claim_name == "hedge-data"
    [toleration] = pod.spec.tolerations
    assert (toleration.key, toleration.effect) == (GPU_RESOURCE, "NoSchedule")


def test_a_cpu_pod_asks_for_no_gpu_and_several_processes_get_a_memory_backed_shm():
    single = _pod()
    assert GPU_RESOURCE not in single.spec.containers[0].resources.limits
    assert single.spec.tolerations is None
    assert [v.name for v in single.spec.volumes] == ["hedge-data"]
    ddp = _pod(processes=4)
    shm = {m.name: m.mount_path for m in ddp.spec.containers[0].volume_mounts}
    assert shm["dshm"] == "/dev/shm"
    [memory] = [v for v in ddp.spec.volumes if v.name == "dshm"]
    assert memory.empty_dir.medium == "Memory"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image": ""}, "needs an image: set HEDGE_K8S_IMAGE"),
        ({"data_claim": ""}, "set HEDGE_K8S_DATA_CLAIM"),
        ({"gpus": -1}, "gpus must be >= 0 and processes >= 1"),
    ],
)
def test_a_pod_without_what_it_needs_is_refused_naming_the_variable(overrides, message):
    with pytest.raises(ValueError, match=message):
        _pod(**overrides)
