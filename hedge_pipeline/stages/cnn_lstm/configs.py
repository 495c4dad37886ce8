"""The stage's config dict read as the trainer's and the model's typed configs.

Shared by ``train`` (the final fit) and ``hpo`` (each trial), so that a trial trains exactly
what the final fit would with the same parameters.
"""

from __future__ import annotations

from typing import Any

from hedge_pipeline.harness.trainer import TrainConfig
from hedge_pipeline.stages.cnn_lstm.model import CnnLstmConfig


def train_config(cfg: dict[str, Any], **overrides: Any) -> TrainConfig:
    values = {
        "epochs": cfg["epochs"],
        "lr": cfg["learning_rate"],
        "patience": cfg["patience"],
        "seed": cfg["seed"],
        "device": cfg.get("device", "auto"),
        "weight_decay": cfg.get("weight_decay", 1e-4),
        **overrides,
    }
    return TrainConfig(**values)


def model_config(cfg: dict[str, Any], **overrides: Any) -> CnnLstmConfig:
    return CnnLstmConfig(sequence_length=cfg["sequence_length"], **{**cfg["model"], **overrides})
