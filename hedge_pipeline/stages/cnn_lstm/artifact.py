"""The registered ``hedge-cnn-lstm`` folder: what the stage writes and what later stages load.

The stage's public face to the rest of the lineage: the specialists load a version through
:func:`load_model` (weights plus the spec: network sizes, columns, standardizers, horizon), never
through the training child's internals.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from hedge_pipeline.registry import versions as registry
from hedge_pipeline.stages.cnn_lstm.market_state import (
    FEATURE_COLUMNS,
    TARGET_COLUMNS,
    SequenceData,
    Standardizer,
)
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig

MODEL_NAME = "hedge-cnn-lstm"


def save_model(
    model: CnnLstm, config: CnnLstmConfig, data: SequenceData, horizon: int, out: Path
) -> Path:
    """The registered folder: state dict plus everything needed to rebuild and feed the model."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / registry.WEIGHTS_FILE)
    spec = {
        "model": asdict(config),
        "feature_columns": list(FEATURE_COLUMNS),
        "target_columns": list(TARGET_COLUMNS),
        "horizon": horizon,
        "inputs": data.inputs.to_dict(),
        "targets": data.targets.to_dict(),
    }
    (out / "config.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out


def load_model(directory: Path) -> tuple[CnnLstm, dict[str, Any]]:
    """Rebuild a registered CNN-LSTM (eval mode) and its spec (standardizers, columns, horizon)."""
    spec = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    model = CnnLstm(CnnLstmConfig(**spec["model"]))
    state = torch.load(directory / registry.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    spec["inputs"] = Standardizer.from_dict(spec["inputs"])
    spec["targets"] = Standardizer.from_dict(spec["targets"])
    return model, spec
