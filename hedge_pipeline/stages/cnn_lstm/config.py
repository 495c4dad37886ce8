"""The CNN-LSTM stage's contract: the user's overrides, the merged config its child trains on,
and that config read as the trainer's and the network's typed configs.

``CnnLstmChoices`` is what a user sets in the asset's run config; the portfolio template's
``training_params`` say what the researcher wants; the profile's ``CnnLstmBudget`` caps both
and sizes the network (:meth:`CnnLstmStageConfig.within`). The child validates the merged
config before reading any data (``harness.config``). ``train_config`` and ``model_config`` are
shared by ``train`` (the final fit) and ``hpo`` (each trial), so that a trial trains exactly
what the final fit would with the same parameters: they read the mapping, because a trial
overrides some of its values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field

from hedge_pipeline.harness.config import ChildInputs, StageConfig, given
from hedge_pipeline.runtime.profiles import Profile
from hedge_pipeline.stages.selection.templates import TrainingParams

if TYPE_CHECKING:  # torch stays out of the code location's imports
    from hedge_pipeline.harness.trainer import TrainConfig
    from hedge_pipeline.stages.cnn_lstm.model import CnnLstmConfig


class CnnLstmChoices(BaseModel):
    """Run-time overrides; unset fields come from the template within the profile's budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0.0)
    hpo_trials: int | None = Field(default=None, ge=0)
    seed: int = 0


class NetworkSizes(BaseModel):
    """The network's sizes (``model.CnnLstmConfig`` less the sequence length)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conv_channels: int = Field(ge=1)
    lstm_hidden: int = Field(ge=1)
    lstm_layers: int = Field(ge=1)
    attention_heads: int = Field(ge=1)
    embedding_dim: int = Field(ge=1)
    dropout: float = Field(ge=0.0, lt=1.0)


class CnnLstmStageConfig(StageConfig):
    """What the ``cnn_lstm`` child trains on."""

    sequence_length: int = Field(ge=1)
    horizon: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0.0)
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    max_windows: int | None = Field(ge=1, description="per split; None: all")
    mc_samples: int = Field(ge=1)
    hpo_trials: int = Field(ge=0)
    seed: int = 0
    model: NetworkSizes
    device: str = Field(default="auto", description="torch device; auto: CUDA when present")
    weight_decay: float = Field(default=1e-4, ge=0.0)

    @classmethod
    def within(cls, choices: CnnLstmChoices, params: TrainingParams, profile: Profile) -> Self:
        """The cap rules, all of them:

        * ``sequence_length``: the template's, capped at ``max_sequence_length``;
        * ``epochs`` and ``hpo_trials``: the choice, else the template's, capped at the
          budget's ``max_epochs`` and ``max_hpo_trials``;
        * ``learning_rate``: the choice, else the template's (no cap: it is not a cost);
        * ``horizon`` and ``batch_size``: the template's;
        * network sizes, patience, window subsample and MC samples: the profile's.
        """
        budget = profile.cnn_lstm
        epochs = given(choices.epochs, params.epochs)
        trials = given(choices.hpo_trials, params.hpo_trials)
        return cls.parse(
            {
                "sequence_length": min(params.sequence_length, budget.max_sequence_length),
                "horizon": params.horizon,
                "batch_size": params.batch_size,
                "learning_rate": given(choices.learning_rate, params.learning_rate),
                "epochs": min(epochs, budget.max_epochs),
                "patience": budget.patience,
                "max_windows": budget.max_windows,
                "mc_samples": budget.mc_samples,
                "hpo_trials": min(trials, budget.max_hpo_trials),
                "seed": choices.seed,
                "model": {
                    "conv_channels": budget.conv_channels,
                    "lstm_hidden": budget.lstm_hidden,
                    "lstm_layers": budget.lstm_layers,
                    "attention_heads": budget.attention_heads,
                    "embedding_dim": budget.embedding_dim,
                    "dropout": 0.1,
                },
            }
        )


class CnnLstmInputs(ChildInputs):
    """The ``cnn_lstm`` child's extras: the exported ``market_state_frame`` and the config."""

    dataset: Path
    config: CnnLstmStageConfig


def train_config(cfg: dict[str, Any], **overrides: Any) -> TrainConfig:
    """The harness's ``TrainConfig`` of a (validated, possibly trial-overridden) config."""
    from hedge_pipeline.harness.trainer import TrainConfig

    values = {
        "epochs": cfg["epochs"],
        "lr": cfg["learning_rate"],
        "patience": cfg["patience"],
        "seed": cfg["seed"],
        "device": cfg["device"],
        "weight_decay": cfg["weight_decay"],
        **overrides,
    }
    return TrainConfig(**values)


def model_config(cfg: dict[str, Any], **overrides: Any) -> CnnLstmConfig:
    """The network's ``CnnLstmConfig`` of a (validated, possibly trial-overridden) config."""
    from hedge_pipeline.stages.cnn_lstm.model import CnnLstmConfig

    return CnnLstmConfig(sequence_length=cfg["sequence_length"], **{**cfg["model"], **overrides})
