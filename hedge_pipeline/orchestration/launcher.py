"""Launching ``python -m hedge_pipeline.training <stage>`` through Dagster Pipes.

One device: a plain subprocess. Several: the same module under ``torchrun --standalone``
(DDP; rank 0 alone speaks Pipes). On a cluster, swap this resource for one built on
``PipesK8sClient`` or a Ray job client: the child and its extras stay the same.

A child that fails for a reason a retry cannot fix (diverged training, bad configuration)
writes a small JSON file named in its extras; the launcher turns it into a non-retryable
``dg.Failure`` with the child's message. Anything else (a killed process, a crash) is left to
the asset's ``RetryPolicy``, and the child resumes from its checkpoint. A signal to the run
itself (Ctrl-C, SIGTERM) is final too: the run stops, and its re-execution resumes.
Messages come through :class:`~.pipes_messages.CompleteLineMessageReader`: whole lines only,
however the child's writes of a long report are split. With ``HEDGE_PROGRESS`` set (``hedge
run`` sets it) each epoch of the child is printed as it ends (``harness.progress``).
"""

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from hedge_pipeline.harness.progress import ConsoleProgress
from hedge_pipeline.orchestration.pipes_messages import CompleteLineMessageReader
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import Settings


class TrainingLauncher(dg.ConfigurableResource):
    """Runs training stages in child processes (see module docstring)."""

    devices: int = Field(default=1, ge=1, description="processes/devices; >1 uses torchrun")

    def command(self, stage: str) -> list[str]:
        if self.devices == 1:
            return [sys.executable, "-m", "hedge_pipeline.training", stage]
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={self.devices}", "-m", "hedge_pipeline.training", stage,
        ]  # fmt: skip

    def run(
        self, context: dg.AssetExecutionContext, stage: str, extras: dict[str, Any]
    ) -> dg.MaterializeResult:
        with tempfile.TemporaryDirectory(prefix="hedge-failure-") as tmp:
            failure_file = Path(tmp) / "failure.json"
            reader = CompleteLineMessageReader(observer=_progress(context, stage))
            client = dg.PipesSubprocessClient(cwd=str(paths.REPO_ROOT), message_reader=reader)
            try:
                return client.run(
                    command=self.command(stage),
                    context=context,
                    extras={**extras, "failure_file": str(failure_file)},
                ).get_materialize_result()
            except dg.DagsterExecutionInterruptedError:
                # SIGINT/SIGTERM to the run (Ctrl-C, `kill`, a terminated run): Pipes has
                # forwarded SIGINT to the child, which checkpointed and exited. Left alone,
                # Dagster would answer the interrupt with the RetryPolicy and train again in the
                # very process asked to stop (a Ctrl-C of `hedge run` restarted training twice
                # before it took). Failing for good ends the run; re-executing it from failure
                # resumes from the checkpoint (same root run, same checkpoint folder).
                raise dg.Failure(
                    description=f"{stage} interrupted by a signal to the run; re-execute the "
                    "run from failure to resume from its checkpoint",
                    allow_retries=False,
                ) from None
            except Exception:
                # The child exited non-zero (Pipes raises DagsterPipesExecutionError, a plain
                # Exception); only the child's own failure file makes it final.
                if failure_file.exists():
                    failure = json.loads(failure_file.read_text(encoding="utf-8"))
                    raise dg.Failure(description=failure["message"], allow_retries=False) from None
                raise


def _progress(context: dg.AssetExecutionContext, stage: str) -> ConsoleProgress | None:
    """The epoch lines on stdout when ``HEDGE_PROGRESS`` asks for them (``hedge run`` does:
    its terminal is this process's stdout, or its worker's), labelled with the stage and the
    partition."""
    if not Settings.from_env().progress:
        return None
    label = f"{stage} {context.partition_key}" if context.has_partition_key else stage
    return ConsoleProgress(label)
