"""One MLflow run per (Dagster run, asset), continued across retries, and the reporter that
streams each epoch both to Dagster (through the session) and to MLflow.

A retried step resumes its training checkpoint; it also re-opens the MLflow run the first
attempt left unfinished, so per-epoch metrics continue as one curve instead of two runs.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from hedge_pipeline.harness.monitor import TrainingDiverged
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.registry.versions import TamperedArtifactError, ensure_experiment
from hedge_pipeline.runtime import paths


def png_markdown(path: Path, title: str) -> str:
    """A PNG inlined as a markdown image: Dagster metadata shows it without a file server."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{title}](data:image/png;base64,{encoded})"


def checkpoint_path(stage: str, identity: dict[str, Any], config_digest: str) -> Path:
    """Checkpoints of one training: same stage, data, configuration and Dagster run lineage.

    Retries and re-executions of a run resume here; a new materialization trains afresh
    rather than silently returning an old run's weights.
    """
    root = str(identity.get("root_run_id") or identity["dagster_run_id"])[:8]
    folder = f"{identity['data_version'][:16]}-{config_digest}-{root}"
    return paths.checkpoints_dir() / stage / folder


def identity_tags(identity: dict[str, Any], config_hash: str) -> dict[str, str]:
    """The registry tags of docs/design.md §8 that come from the launcher and the configuration."""
    tags = {
        "dagster_run_id": str(identity["dagster_run_id"]),
        "dagster_asset": str(identity["dagster_asset"]),
        "data_version": str(identity["data_version"]),
        "code_version": str(identity["code_version"]),
        "config_hash": config_hash,
    }
    if identity.get("weekly_code"):
        tags["weekly_code"] = str(identity["weekly_code"])
    for model, version in (identity.get("upstream") or {}).items():
        tags[f"upstream.{model}"] = str(version)
    return tags


@contextmanager
def tracking_run(
    client: MlflowClient, experiment: str, tags: dict[str, str], params: dict[str, Any]
) -> Iterator[str]:
    """Start, or continue after a retry, the run of this (Dagster run, asset); yield its id.

    The run ends FINISHED when the block completes and FAILED when it raises.
    """
    experiment_id = ensure_experiment(client, experiment)
    query = (
        f"tags.dagster_run_id = '{tags['dagster_run_id']}' and "
        f"tags.dagster_asset = '{tags['dagster_asset']}' and "
        f"tags.config_hash = '{tags['config_hash']}'"
    )
    previous = [
        r
        for r in client.search_runs([experiment_id], filter_string=query)
        if r.info.status != "FINISHED"
    ]
    if previous:
        run_id = previous[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_batch(
            run_id,
            params=[
                Param(k, json.dumps(v) if isinstance(v, dict | list) else str(v))
                for k, v in params.items()
            ],
        )
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")


def log_metrics(
    client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0
) -> None:
    """Log the finite values of ``metrics`` in one call (NaN says "undefined", not zero)."""
    now = int(time.time() * 1000)
    finite = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
    client.log_batch(run_id, metrics=finite)


class TrackingReporter:
    """``harness.trainer.Reporter`` that writes to the Dagster event log and the MLflow run."""

    def __init__(self, session: TrainingSession, client: MlflowClient | None, run_id: str | None):
        self.session = session
        self.client = client
        self.run_id = run_id

    def info(self, message: str) -> None:
        self.session.info(message)

    def warning(self, message: str) -> None:
        self.session.warning(message)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.session.epoch(epoch, metrics)
        if self.client and self.run_id:
            values = {k: v for k, v in metrics.items() if k != "epoch"}
            log_metrics(self.client, self.run_id, values, step=epoch)


@contextmanager
def failures_are_final(session: TrainingSession) -> Iterator[None]:
    """Failures a retry cannot fix (divergence, bad configuration, a registered upstream model
    whose weights fail their checksum: a retry reads the same bytes) are reported as final
    (:meth:`TrainingSession.fail_for_good`, through Pipes), so the launcher fails the step
    once, without retrying."""
    try:
        yield
    except (TrainingDiverged, ValueError, TamperedArtifactError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        session.fail_for_good(message)
        session.warning(message)
        raise
