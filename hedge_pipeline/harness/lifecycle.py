"""One stage lifecycle, written once: the steps every registered model goes through.

open the tracking run → train (checkpoints keyed by the config hash) → evaluate → log the
evaluation's metrics and report files → save the weights and the spec → wrap the folder as an
MLflow pyfunc with a signature and an input example (``registry.pyfunc``; a model no stage
serves yet stays a bare folder) → register (checksum, alias ``candidate``, the evaluation's tags
such as a promotion decision) → reload the registered version and check that it gives identical
outputs → one line in the run's log.

A stage supplies only what differs, as a :class:`StageModel`: how to train, evaluate, save,
load and probe its model. That part never touches MLflow or a subprocess, so it is unit-tested
on its own; :func:`train_and_register` is the only place the steps are sequenced, so that every
stage tags, checkpoints and checks its versions alike. Reporting to Dagster stays with the stage
(the joint stage reports several versions at once, the ensemble adds its promotion).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from torch import nn

from hedge_pipeline.harness.config import config_hash
from hedge_pipeline.harness.distributed import launched_world_size
from hedge_pipeline.harness.session import TrainingSession
from hedge_pipeline.harness.tracking import (
    TrackingReporter,
    checkpoint_path,
    identity_tags,
    log_metrics,
    tracking_run,
)
from hedge_pipeline.registry import pyfunc
from hedge_pipeline.registry import versions as registry

WORLD_SIZE_TAG = "world_size"  # on the run: the processes that trained it (torchrun ranks)


class ReloadMismatchError(RuntimeError):
    """The registered version does not reproduce the outputs of the model that was trained."""


@dataclass
class StageResult:
    """What a stage's evaluation hands the lifecycle.

    ``metrics`` go to the MLflow run; ``tags`` onto the registered version (set again when a
    retried run gets its earlier version back, so they always say what this evaluation found);
    ``summary`` is the log line after registration; ``artifacts`` (figures) are logged at the
    root of the run. Files the evaluation wrote under ``scratch/report`` are logged under
    ``report/`` of the run.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)


class StageModel(Protocol):
    """The part of a stage that differs from every other (module docstring)."""

    #: the registered model's name (also its MLflow experiment)
    registered_name: str

    def fit(self, reporter: TrackingReporter, checkpoints: Path) -> nn.Module:
        """Train (or resume from ``checkpoints``) and return the model in eval mode."""
        ...

    def evaluate(self, model: nn.Module, scratch: Path) -> StageResult:
        """Score the trained model on held-out data; report files may go to
        ``scratch / "report"``."""
        ...

    def save(self, model: nn.Module, out: Path) -> Path:
        """Write the registered folder (weights and the spec that rebuilds the model)."""
        ...

    def load(self, directory: Path) -> nn.Module:
        """Rebuild the model from a registered folder, in eval mode."""
        ...

    def probe(self, model: nn.Module) -> torch.Tensor:
        """Outputs on fixed inputs: the reloaded model must give these exactly."""
        ...


@dataclass
class Registered:
    """A registered version and what produced it."""

    version: ModelVersion
    run_id: str
    model: nn.Module
    tags: dict[str, str]
    checkpoints: Path

    def metadata(self) -> dict[str, Any]:
        """The entries every stage's materialization starts with: which version, from which
        MLflow run, with which weights."""
        return {
            "registered_model": self.version.name,
            "version": int(self.version.version),
            "mlflow_run_id": self.run_id,
            "weights_sha256": self.version.tags["weights_sha256"],
        }

    @property
    def data_version(self) -> str:
        """The materialization's data version: the weights' checksum, so identical weights
        read as the same data downstream."""
        return self.version.tags["weights_sha256"][:16]


def reload_check(model: StageModel, trained: nn.Module, directory: Path) -> None:
    """Raise :class:`ReloadMismatchError` unless ``directory`` rebuilds ``trained`` exactly."""
    with torch.no_grad():
        expected, actual = model.probe(trained), model.probe(model.load(directory))
    if not torch.equal(expected, actual):
        raise ReloadMismatchError(
            f"{model.registered_name}: the registered folder does not reload to identical "
            f"outputs (largest difference {float((expected - actual).abs().max()):.3g})"
        )


def train_and_register(
    session: TrainingSession,
    client: MlflowClient | None,
    stage: str,
    model: StageModel,
    identity: Mapping[str, Any],
    cfg: Mapping[str, Any],
    extra_tags: Mapping[str, str] | None = None,
) -> Registered | None:
    """Every step of the module docstring for one model version of ``stage``.

    Under ``torchrun`` only rank 0 tracks, evaluates and registers; the other ranks train
    (their gradients are averaged inside ``fit``), need no ``client`` and get None. The run's
    ``world_size`` tag says how many processes trained it.
    """
    digest = config_hash(cfg)
    tags = identity_tags(dict(identity), digest) | dict(extra_tags or {})
    checkpoints = checkpoint_path(stage, dict(identity), digest)
    name = model.registered_name
    if not session.is_main:
        model.fit(TrackingReporter(session, None, None), checkpoints)
        return None
    if client is None:
        raise ValueError("rank 0 registers: it needs an MLflow client")
    with (
        tracking_run(client, name, tags, dict(cfg)) as run_id,
        tempfile.TemporaryDirectory(prefix=f"{stage}-") as tmp,
    ):
        scratch = Path(tmp)
        client.set_tag(run_id, WORLD_SIZE_TAG, str(launched_world_size()))
        reporter = TrackingReporter(session, client, run_id)
        trained = model.fit(reporter, checkpoints)
        evaluation = model.evaluate(trained, scratch)
        log_metrics(client, run_id, evaluation.metrics)
        for path in evaluation.artifacts:
            client.log_artifact(run_id, str(path))
        if (scratch / "report").is_dir():
            client.log_artifacts(run_id, str(scratch / "report"), artifact_path="report")
        folder = model.save(trained, scratch / registry.STAGE_ARTIFACT)
        serving = pyfunc.serving_module(name)
        if serving is not None:
            folder = pyfunc.package(folder, serving, scratch / "pyfunc")
        version = registry.register_version(client, name, run_id, folder, tags | evaluation.tags)
        for key, value in evaluation.tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        reload_check(model, trained, registry.load_version(client, name, version.version).directory)
    session.info(f"registered {name} v{version.version}: {evaluation.summary}")
    return Registered(version, run_id, trained, tags, checkpoints)
