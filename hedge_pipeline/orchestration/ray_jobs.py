"""Training children as Ray jobs: dagster-ray's ``PipesRayJobClient``, with the launcher's
message observers (``orchestration.launcher``, kind ``ray``).

The job runs the same entry point as a local child (``python -m hedge_pipeline.training
<stage>``, or ``torchrun`` around it), submitted to the Ray dashboard at ``HEDGE_RAY_ADDRESS``
(Ray's ``RAY_ADDRESS`` when unset). The job's code is the project **installed on the cluster's
nodes** (the image or virtual environment a Ray cluster is built from, at the same commit as
the code location), not a ``working_dir`` upload: a training run imports torch and the whole
package, and an upload per job would copy the repository for every stage and every retry. Its
data is the data directory, mounted at the same path on every node (a shared file system:
NFS, EFS, a CSI volume): the exported Parquet datasets, the checkpoints that a retry resumes
from on whichever node it lands, and MLflow's store unless ``MLFLOW_TRACKING_URI`` names a
tracking server. The job's environment is ``runtime.settings.child_environment``.

Pipes messages travel on the job's stdout, which the reader tails through the dashboard; the
Ray client authenticates with Ray's own ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (or
``RAY_AUTH_TOKEN_PATH``) in the Dagster process's environment (Ray 2.60 turns token
authentication on by default). A job that ends FAILED or STOPPED (``ray job stop``, a lost
node) raises, and the asset's ``RetryPolicy`` submits a new job that resumes from the
checkpoint; an interrupt of the Dagster run stops the job.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster_ray.core.pipes import PipesRayJobClient, PipesRayJobMessageReader, SubmitJobParams

from hedge_pipeline.orchestration.pipes_messages import ObservedHandler, Observer


class ObservedRayJobMessageReader(PipesRayJobMessageReader):
    """dagster-ray's job-log reader, showing each message to ``observers`` as well."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        super().__init__()
        self._observers = tuple(observers)

    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[Any]:  # type: ignore[override]
        return super().read_messages(ObservedHandler(handler, self._observers))  # type: ignore[arg-type]

    def handle_job_logs(self, handler: dg.PipesMessageHandler) -> None:
        """dagster-ray's log tailing, then the event loop it opened in this thread closed.

        dagster-ray 0.4.8 tails the job's logs on a new event loop per reader thread and leaves
        it open: its sockets and the loop itself were reported unclosed when the garbage
        collector met them later, in whatever code ran then.
        """
        try:
            super().handle_job_logs(handler)
        finally:
            _close_thread_event_loop()


def _close_thread_event_loop() -> None:
    """Finalize the async generators of this thread's event loop (the log tailer's websocket),
    then close the loop, if the thread has one that is not running."""
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:  # no loop was ever set in this thread
        return
    if loop.is_running() or loop.is_closed():
        return
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def submit_params(command: Sequence[str], env: Mapping[str, str], gpus: int = 0) -> SubmitJobParams:
    """The job's ``submit_job`` arguments: ``command`` as its entrypoint, ``env`` as its
    environment, ``gpus`` reserved for the entrypoint (the training runs in it).

    >>> params = submit_params(["python", "-m", "hedge_pipeline.training", "cnn_lstm"],
    ...                        {"HEDGE_DATA_DIR": "/shared/hedge"}, gpus=1)
    >>> params["entrypoint"], params["entrypoint_num_gpus"]
    ('python -m hedge_pipeline.training cnn_lstm', 1)
    >>> params["runtime_env"]
    {'env_vars': {'HEDGE_DATA_DIR': '/shared/hedge'}}
    """
    params = SubmitJobParams(entrypoint=shlex.join(command), runtime_env={"env_vars": dict(env)})
    if gpus:
        params["entrypoint_num_gpus"] = gpus
    return params


def ray_job_client(address: str | None, observers: Sequence[Observer]) -> PipesRayJobClient:
    """The Pipes client of one stage's job (``address``: the dashboard URL, or Ray's default)."""
    return PipesRayJobClient(
        address=address, message_reader=ObservedRayJobMessageReader(observers), poll_interval=1
    )
