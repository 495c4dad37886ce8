"""What a stage sees of its launcher: extras in, logs and a report out.

Under Dagster Pipes, logs stream into the run's event log and the report becomes the asset's
materialization. Run by hand (``--extras FILE``), logs go to stderr and the report is printed
as JSON on stdout, so the same stage code runs on a laptop, a GPU box or a cluster.

Under ``torchrun`` every rank reads the extras, but only rank 0 opens the Pipes message
channel (several writers on one channel would interleave) and reports.

A failure no retry can fix (:meth:`TrainingSession.fail_for_good`) travels through the same
channel, as a custom message ``{"final_failure": "<message>"}`` that the launcher turns into
a non-retryable failure: whatever runs the child (a subprocess, a Ray job, a pod on another
machine) carries it, where a file in the launcher's temporary folder reached only children on
the launcher's own machine. Run by hand, the message goes to the ``failure_file`` of the
extras when they name one (scripts and tests of a standalone child read it there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from dagster_pipes import (
    PipesContext,
    PipesDefaultContextLoader,
    PipesEnvVarParamsLoader,
    open_dagster_pipes,
)

FINAL_FAILURE = "final_failure"
"""The key of the custom Pipes message that makes a failure final (module docstring)."""


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


class TrainingSession:
    """Extras, logging and reporting for one stage run (see module docstring)."""

    def __init__(self, extras: dict[str, Any], pipes: PipesContext | None, rank: int) -> None:
        self.extras = extras
        self.rank = rank
        self._pipes = pipes
        self.report_payload: dict[str, Any] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def info(self, message: str) -> None:
        self._log("info", message)

    def warning(self, message: str) -> None:
        self._log("warning", message)

    def _log(self, level: str, message: str) -> None:
        """Into the Dagster event log under Pipes, else to stderr; rank 0 only."""
        if not self.is_main:
            return
        if self._pipes:
            getattr(self._pipes.log, level)(message)
        else:
            prefix = "" if level == "info" else f"{level.upper()}: "
            print(f"{prefix}{message}", file=sys.stderr, flush=True)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Per-epoch metrics as one parseable line (the trainer also logs a readable summary)."""
        if self.is_main and self._pipes:
            self._pipes.log.debug(json.dumps({"epoch": epoch, **metrics}, sort_keys=True))

    def fail_for_good(self, message: str) -> None:
        """Say that this run failed for a reason a retry cannot fix (rank 0 only; module doc).

        Call it before the exception leaves the session: the message must reach the launcher
        before the child exits.
        """
        if not self.is_main:
            return
        if self._pipes:
            self._pipes.report_custom_message({FINAL_FAILURE: message})
        elif failure_file := self.extras.get("failure_file"):
            with open(failure_file, "w", encoding="utf-8") as f:
                json.dump({"message": message}, f)

    def report(
        self, metadata: dict[str, Any], data_version: str, asset_key: str | None = None
    ) -> None:
        """Report the materialization (rank 0 only)."""
        if not self.is_main:
            return
        self.report_payload = {"metadata": metadata, "data_version": data_version}
        if self._pipes:
            self._pipes.report_asset_materialization(
                metadata={k: _pipes_value(v) for k, v in metadata.items()},
                data_version=data_version,
                asset_key=asset_key,
            )
        else:
            print(json.dumps(self.report_payload, default=str, indent=2))


def _pipes_value(value: Any) -> Any:
    """Pipes takes raw scalars, or ``{raw_value, type}``: nested values travel as JSON."""
    if isinstance(value, dict) and set(value) == {"raw_value", "type"}:
        return value
    if isinstance(value, dict | list | tuple):
        return {"raw_value": value, "type": "json"}
    return value


def _standalone_extras(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m hedge_pipeline.training STAGE")
    parser.add_argument("--extras", required=True, help="JSON file of the stage's extras")
    args = parser.parse_args(argv)
    with open(args.extras, encoding="utf-8") as f:
        return json.load(f)


@contextmanager
def open_session(argv: list[str]) -> Iterator[TrainingSession]:
    """A Pipes session when Dagster launched us, else one built from ``--extras FILE``."""
    params = PipesEnvVarParamsLoader()
    rank = _rank()
    if not params.is_dagster_pipes_process():
        yield TrainingSession(_standalone_extras(argv), None, rank)
        return
    if rank != 0:
        with PipesDefaultContextLoader().load_context(params.load_context_params()) as data:
            extras = dict(data.get("extras") or {})
        yield TrainingSession(extras, None, rank)
        return
    with ExitStack() as stack:
        pipes = stack.enter_context(open_dagster_pipes())
        yield TrainingSession(dict(pipes.extras), pipes, rank)
