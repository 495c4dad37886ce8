"""Training children as Kubernetes pods: ``dagster-k8s``'s ``PipesK8sClient``, with the pod
spec built here (``orchestration.launcher``, kind ``k8s``).

:func:`pod_spec` is pure (a dict in the Kubernetes API's camelCase, what ``PipesK8sClient.run``
takes as ``base_pod_spec``) so that what a pod gets is unit-tested without a cluster:

* the image (the project installed at the code location's commit) and the command, the same
  entry point as a local child;
* requests equal to limits for CPU and memory (a training pod should not be throttled below
  what it was sized for, nor evicted first), and ``nvidia.com/gpu`` limits when GPUs are asked
  for, with the toleration of the usual GPU-node taint;
* the environment of ``runtime.settings.child_environment`` (Pipes adds its own variables);
* the data directory: a ``PersistentVolumeClaim`` (ReadWriteMany, shared with the Dagster
  pods, so that the datasets the asset exports are the ones the pod reads and a retried pod
  resumes the checkpoint of the one before) mounted at the directory's own path, and a
  memory-backed ``/dev/shm`` when several processes train (``torchrun``'s workers exchange
  tensors through it; a container's default 64 MiB is too small).

Messages travel in the pod's log, which the client reads through the Kubernetes API. The
deployment (Dagster's Helm chart, with ``dagster-k8s``) is in the README's launchers section.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_k8s import PipesK8sClient
from dagster_k8s.pipes import PipesK8sPodLogsMessageReader

from hedge_pipeline.orchestration.pipes_messages import ObservedHandler, Observer

CONTAINER = "training"
DATA_VOLUME = "hedge-data"
SHM_VOLUME = "dshm"
GPU_RESOURCE = "nvidia.com/gpu"


def pod_spec(
    *,
    image: str,
    command: Sequence[str],
    env: Mapping[str, str],
    data_dir: Path,
    data_claim: str,
    cpu: str = "2",
    memory: str = "8Gi",
    gpus: int = 0,
    processes: int = 1,
) -> dict[str, Any]:
    """The training pod's spec (module docstring); ``processes`` > 1 adds ``/dev/shm``.

    >>> spec = pod_spec(image="hedge:abc", command=["python", "-m", "hedge_pipeline.training",
    ...                 "joint"], env={"HEDGE_PROFILE": "full"}, data_dir=Path("/data"),
    ...                 data_claim="hedge-data", gpus=1)
    >>> spec["containers"][0]["resources"]["limits"]
    {'cpu': '2', 'memory': '8Gi', 'nvidia.com/gpu': '1'}
    """
    if not image:
        raise ValueError("the k8s launcher needs an image: set HEDGE_K8S_IMAGE")
    if not data_claim:
        raise ValueError(
            "the k8s launcher needs the data directory's PersistentVolumeClaim: set "
            "HEDGE_K8S_DATA_CLAIM (a ReadWriteMany claim the Dagster pods mount too)"
        )
    if gpus < 0 or processes < 1:
        raise ValueError(
            f"pod_spec: gpus must be >= 0 and processes >= 1 (got {gpus}, {processes})"
        )
    limits = {"cpu": cpu, "memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    mounts = [{"name": DATA_VOLUME, "mountPath": str(data_dir)}]
    volumes: list[dict[str, Any]] = [
        {"name": DATA_VOLUME, "persistentVolumeClaim": {"claimName": data_claim}}
    ]
    if processes > 1:
        mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
        volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
    container = {
        "name": CONTAINER,
        "image": image,
        "command": list(command),
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": volumes}
    if gpus:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return spec


class ObservedK8sMessageReader(PipesK8sPodLogsMessageReader):
    """dagster-k8s's pod-log reader, showing each message to ``observers`` as well."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        super().__init__()
        self._observers = tuple(observers)

    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[Any]:  # type: ignore[override]
        return super().read_messages(ObservedHandler(handler, self._observers))  # type: ignore[arg-type]


def k8s_client(observers: Sequence[Observer]) -> PipesK8sClient:
    """The Pipes client of one stage's pod (in-cluster config inside a pod, else kubeconfig)."""
    return PipesK8sClient(message_reader=ObservedK8sMessageReader(observers))
