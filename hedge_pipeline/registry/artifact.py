"""A registered model's folder: its weights and its typed spec, written and read in one place.

Every model stage registers the same folder: ``weights.pt`` (a state dict) and ``config.json``
(the spec that rebuilds the module around the weights: sizes, book, costs, standardizers,
upstream versions). The spec is a stage's public face to later stages, so each stage declares it
as an :class:`ArtifactSpec` subclass beside its asset (``stages/<stage>/artifact.py``), and later
stages load a version through that type, never through the training child's internals. Reading
validates the whole spec: a folder from an older release, or one edited by hand, fails with the
file and every offending field named instead of a ``KeyError`` deep inside a rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from hedge_pipeline.harness.config import describe
from hedge_pipeline.registry.versions import WEIGHTS_FILE

SPEC_FILE = "config.json"


class ArtifactSpecError(ValueError):
    """A registered folder's spec is missing or does not validate."""


class ArtifactSpec(BaseModel):
    """Base of every stage's registered spec: unknown keys are errors, values immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def write(self, out: Path) -> Path:
        """``out/config.json`` (indented JSON, fields in declaration order)."""
        path = out / SPEC_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2), encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Self:
        """The spec of a registered folder, validated whole (module docstring)."""
        path = directory / SPEC_FILE
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactSpecError(f"{path}: missing (not a registered model folder)") from None
        except ValidationError as error:
            raise ArtifactSpecError(f"{path}: invalid {cls.__name__}: {describe(error)}") from None


def save_artifact(model: nn.Module, spec: ArtifactSpec, out: Path) -> Path:
    """Write the registered folder ``out``: the model's state dict and its spec."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    spec.write(out)
    return out


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """A registered folder's state dict, on the CPU (tensors only: no pickled code runs)."""
    return torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
