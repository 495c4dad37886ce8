"""Launching ``python -m hedge_pipeline.training <stage>`` through Dagster Pipes.

One resource, four kinds (``HEDGE_LAUNCHER``, docs/design.md §1), one entry point:

``subprocess``
    A child process of the step. With ``HEDGE_DEVICES`` > 1 it is ``torchrun``'s.
``torchrun``
    The module under ``torchrun`` (DDP; rank 0 alone speaks Pipes): ``--standalone`` on this
    machine, or, with ``HEDGE_NNODES`` > 1 and ``HEDGE_RDZV_ENDPOINT`` (``host:port``, this
    node's address), node 0 of a static rendezvous. The launcher writes the extras to the
    shared data directory and logs the command each other node runs (``--node-rank=i``,
    ``--extras FILE``): this node holds global rank 0, the one that reports.
``ray``
    A Ray job on the cluster at ``HEDGE_RAY_ADDRESS`` (``orchestration.ray_jobs``).
``k8s``
    A pod built by ``orchestration.k8s.pod_spec`` (``HEDGE_K8S_IMAGE``, ``HEDGE_K8S_DATA_CLAIM``).

Whatever the kind, the child's messages are shown to the same observers: the progress printer
(with ``HEDGE_PROGRESS`` set, which ``hedge run`` does, each epoch is printed as it ends:
``harness.progress``) and the final-failure watch. A child that fails for a reason a retry
cannot fix (diverged training, bad configuration) says so through Pipes
(``harness.session.FINAL_FAILURE``), on whatever machine it runs; the launcher turns that into
a non-retryable ``dg.Failure`` with the child's message. Anything else (a killed process, a
stopped Ray job, a crash) is left to the asset's ``RetryPolicy``, and the child resumes from
its checkpoint. A signal to the run itself (Ctrl-C, SIGTERM) is final too: the run stops (a
Ray job is stopped with it), and its re-execution resumes. Local messages come through
:class:`~.pipes_messages.CompleteLineMessageReader`: whole lines only, however the child's
writes of a long report are split.
"""

import json
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, get_args

import dagster as dg
from pydantic import Field

from hedge_pipeline.harness.progress import ConsoleProgress
from hedge_pipeline.orchestration.pipes_messages import (
    CompleteLineMessageReader,
    FinalFailureWatch,
    Observer,
)
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import LauncherKind, Settings, child_environment

KINDS: tuple[str, ...] = get_args(LauncherKind)  # subprocess, torchrun, ray, k8s


class TrainingLauncher(dg.ConfigurableResource):
    """Runs training stages in child processes, Ray jobs or pods (see module docstring)."""

    kind: str = Field(default="subprocess", description="subprocess | torchrun | ray | k8s")
    devices: int = Field(default=1, ge=1, description="processes/devices per node; >1: torchrun")
    nnodes: int = Field(default=1, ge=1, description="torchrun nodes (>1: rdzv_endpoint)")
    rdzv_endpoint: str | None = Field(default=None, description="torchrun node 0's host:port")
    gpus: int = Field(default=0, ge=0, description="GPUs a Ray job or a pod asks for")
    python: str = Field(
        default="python", description="the interpreter of a Ray job or a pod (on their PATH)"
    )
    ray_address: str | None = Field(default=None, description="Ray dashboard URL")
    k8s_image: str | None = Field(default=None, description="the training pod's image")
    k8s_namespace: str | None = Field(default=None, description="the training pod's namespace")
    k8s_data_claim: str | None = Field(default=None, description="PVC of the data directory")
    k8s_cpu: str = Field(default="2", description="the training pod's CPU request and limit")
    k8s_memory: str = Field(default="8Gi", description="the training pod's memory")

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> "TrainingLauncher":
        settings = settings or Settings.from_env()
        return cls(
            kind=settings.launcher,
            devices=settings.devices,
            nnodes=settings.nnodes,
            rdzv_endpoint=settings.rdzv_endpoint,
            gpus=settings.gpus,
            ray_address=settings.ray_address,
            k8s_image=settings.k8s_image,
            k8s_namespace=settings.k8s_namespace,
            k8s_data_claim=settings.k8s_data_claim,
        )

    def effective_kind(self) -> str:
        """The kind that runs: ``subprocess`` with several devices is ``torchrun``, as before
        there were kinds."""
        if self.kind not in KINDS:
            raise ValueError(f"launcher kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.kind == "subprocess" and (self.devices > 1 or self.nnodes > 1):
            return "torchrun"
        return self.kind

    def command(self, stage: str, python: str | None = None) -> list[str]:
        """The child's command line: node 0's for several nodes (module docstring).

        ``python``: the interpreter (default: this one for a local child, :attr:`python` for
        a Ray job or a pod).
        """
        kind = self.effective_kind()
        local = kind in ("subprocess", "torchrun")
        python = python or (sys.executable if local else self.python)
        entry = ["-m", "hedge_pipeline.training", stage]
        if self.devices == 1 and self.nnodes == 1 and kind != "torchrun":
            return [python, *entry]
        return [python, "-m", "torch.distributed.run", *self._rendezvous(0), *entry]

    def _rendezvous(self, node_rank: int) -> list[str]:
        processes = f"--nproc-per-node={self.devices}"
        if self.nnodes == 1:
            return ["--standalone", processes]
        if not self.rdzv_endpoint:
            raise ValueError(
                f"{self.nnodes} torchrun nodes need a rendezvous: set HEDGE_RDZV_ENDPOINT to "
                "node 0's host:port (reachable from every node)"
            )
        host, port = self.rdzv_endpoint.rsplit(":", 1)
        return [
            f"--nnodes={self.nnodes}", f"--node-rank={node_rank}",
            f"--master-addr={host}", f"--master-port={port}", processes,
        ]  # fmt: skip

    def other_nodes(self, stage: str, extras_file: str) -> list[str]:
        """The command each other node of a multi-node ``torchrun`` runs (``{rank}``: its
        node rank), its extras read from ``extras_file`` on the shared data directory."""
        entry = ["-m", "hedge_pipeline.training", stage, "--extras", extras_file]
        return [
            shlex.join(["python", "-m", "torch.distributed.run", *self._rendezvous(rank), *entry])
            for rank in range(1, self.nnodes)
        ]

    def run(
        self, context: dg.AssetExecutionContext, stage: str, extras: dict[str, Any]
    ) -> dg.MaterializeResult:
        failure = FinalFailureWatch()
        observers: list[Observer] = [failure]
        if progress := _progress(context, stage):
            observers.append(progress)
        try:
            launch = self._prepare(context, stage, extras, observers)
        except ValueError as error:
            # A launcher that cannot be set up (a k8s launcher without its image, a bad
            # HEDGE_* value a remote child would be given): no retry can fix it.
            raise dg.Failure(description=f"{stage}: {error}", allow_retries=False) from None
        try:
            return launch().get_materialize_result()
        except dg.DagsterExecutionInterruptedError:
            # SIGINT/SIGTERM to the run (Ctrl-C, `kill`, a terminated run): Pipes has
            # forwarded SIGINT to the child (or stopped its Ray job), which checkpointed and
            # exited. Left alone, Dagster would answer the interrupt with the RetryPolicy and
            # train again in the very process asked to stop (a Ctrl-C of `hedge run` restarted
            # training twice before it took). Failing for good ends the run; re-executing it
            # from failure resumes from the checkpoint (same root run, same checkpoint folder).
            raise dg.Failure(
                description=f"{stage} interrupted by a signal to the run; re-execute the "
                "run from failure to resume from its checkpoint",
                allow_retries=False,
            ) from None
        except Exception:
            # The child exited non-zero, its job failed or its pod did (each client raises its
            # own error); only the child's own final-failure message makes it final.
            if failure.message is not None:
                raise dg.Failure(description=failure.message, allow_retries=False) from None
            raise

    def _prepare(
        self,
        context: dg.AssetExecutionContext,
        stage: str,
        extras: dict[str, Any],
        observers: Sequence[Observer],
    ) -> Callable[[], dg.PipesClientCompletedInvocation]:
        """Everything but the launch itself (command, environment, pod spec: a ``ValueError``
        here is a configuration error), and the launch to call."""
        kind = self.effective_kind()
        command = self.command(stage)
        if kind == "ray":
            from hedge_pipeline.orchestration.ray_jobs import ray_job_client, submit_params

            params = submit_params(command, child_environment(), self.gpus)
            client = ray_job_client(self.ray_address, observers)
            return lambda: client.run(context=context, submit_job_params=params, extras=extras)
        if kind == "k8s":
            from hedge_pipeline.orchestration.k8s import k8s_client, pod_spec

            spec = pod_spec(
                image=self.k8s_image or "",
                command=command,
                env=child_environment(),
                data_dir=paths.data_dir(),
                data_claim=self.k8s_data_claim or "",
                cpu=self.k8s_cpu,
                memory=self.k8s_memory,
                gpus=self.gpus,
                processes=self.devices,
            )
            pods = k8s_client(observers)
            return lambda: pods.run(
                context=context, extras=extras, namespace=self.k8s_namespace, base_pod_spec=spec
            )
        if self.nnodes > 1:
            self._announce_other_nodes(context, stage, extras)
        reader = CompleteLineMessageReader(observers=observers)
        local = dg.PipesSubprocessClient(cwd=str(paths.REPO_ROOT), message_reader=reader)
        return lambda: local.run(command=command, context=context, extras=extras)

    def _announce_other_nodes(
        self, context: dg.AssetExecutionContext, stage: str, extras: dict[str, Any]
    ) -> None:
        """Write the extras where every node reads them; log what each other node runs."""
        folder = paths.data_dir() / "launches"
        folder.mkdir(parents=True, exist_ok=True)
        extras_file = folder / f"{context.run_id}-{stage}.json"
        extras_file.write_text(json.dumps(extras, default=str), encoding="utf-8")
        for command in self.other_nodes(stage, str(extras_file)):
            context.log.info(f"{stage}: waiting for the other torchrun nodes; run {command}")


def _progress(context: dg.AssetExecutionContext, stage: str) -> ConsoleProgress | None:
    """The epoch lines on stdout when ``HEDGE_PROGRESS`` asks for them (``hedge run`` does:
    its terminal is this process's stdout, or its worker's), labelled with the stage and the
    partition."""
    if not Settings.from_env().progress:
        return None
    label = f"{stage} {context.partition_key}" if context.has_partition_key else stage
    return ConsoleProgress(label)
