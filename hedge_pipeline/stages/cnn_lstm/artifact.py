"""The registered ``hedge-cnn-lstm`` folder: what the stage writes and what later stages load.

The stage's public face to the rest of the lineage: the specialists load a version through
:func:`load_model` (weights plus the spec: network sizes, columns, standardizers, horizon), never
through the training child's internals.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from hedge_pipeline.registry.artifact import ArtifactSpec, load_weights, save_artifact
from hedge_pipeline.stages.cnn_lstm.market_state import (
    FEATURE_COLUMNS,
    TARGET_COLUMNS,
    SequenceData,
    Standardizer,
)
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig

MODEL_NAME = "hedge-cnn-lstm"


class StandardizerSpec(BaseModel):
    """A fitted :class:`Standardizer` as stored: per-column mean and std."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[float]
    std: list[float]

    def standardizer(self) -> Standardizer:
        return Standardizer.from_dict({"mean": self.mean, "std": self.std})


class CnnLstmSpec(ArtifactSpec):
    """What rebuilds and feeds a registered CNN-LSTM: network sizes, the columns it reads and
    predicts, the forecast horizon (bars) and the training split's standardizers."""

    model: CnnLstmConfig
    feature_columns: list[str]
    target_columns: list[str]
    horizon: int
    inputs: StandardizerSpec
    targets: StandardizerSpec


def save_model(
    model: CnnLstm, config: CnnLstmConfig, data: SequenceData, horizon: int, out: Path
) -> Path:
    """The registered folder: state dict plus everything needed to rebuild and feed the model."""
    spec = CnnLstmSpec(
        model=config,
        feature_columns=list(FEATURE_COLUMNS),
        target_columns=list(TARGET_COLUMNS),
        horizon=horizon,
        inputs=StandardizerSpec(**data.inputs.to_dict()),
        targets=StandardizerSpec(**data.targets.to_dict()),
    )
    return save_artifact(model, spec, out)


def load_model(directory: Path) -> tuple[CnnLstm, CnnLstmSpec]:
    """Rebuild a registered CNN-LSTM (eval mode) and its spec."""
    spec = CnnLstmSpec.read(directory)
    model = CnnLstm(spec.model)
    model.load_state_dict(load_weights(directory))
    return model.eval(), spec
