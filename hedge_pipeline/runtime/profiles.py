"""Profiles size every training stage (docs/design.md §6).

* ``smoke``: the whole lineage in about a minute on 2 CPU cores, for tests and CI.
* ``default``: minutes on a laptop; models that actually learn.
* ``full``: GPU hours; larger models, more epochs, hyper-parameter search.

A portfolio template's ``training_params`` say what the researcher wants (sequence length,
horizon, batch size, learning rate, epochs, HPO trials); the profile is the budget that caps
them and sizes the networks. ``HEDGE_PROFILE`` picks the profile (default ``default``; read by
``runtime.settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from hedge_pipeline.runtime.settings import ProfileName, Settings

PROFILE_NAMES: tuple[str, ...] = get_args(ProfileName)


class _Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CnnLstmBudget(_Budget):
    """Caps on what a template asks of the CNN-LSTM, and the network's sizes."""

    max_epochs: int = Field(ge=1)
    max_windows: int | None = Field(ge=1)  # per split, deterministic subsample; None: all
    max_sequence_length: int = Field(ge=1)
    conv_channels: int = Field(ge=1)
    lstm_hidden: int = Field(ge=1)
    lstm_layers: int = Field(ge=1)
    attention_heads: int = Field(ge=0)
    embedding_dim: int = Field(ge=1)
    mc_samples: int = Field(ge=1)
    max_hpo_trials: int = Field(ge=0)
    patience: int = Field(ge=1)


class SpecialistSizes(_Budget):
    """The sizes a specialist trains with, taken as they are (the merged stage config holds
    these fields: ``stages.specialists.config``).

    An epoch is ``steps_per_epoch`` optimizer steps of ``paths_per_step`` fresh simulated
    episodes (PPO: iterations of that many paths); ``val_paths`` fixed simulated validation
    episodes pick the best epoch; ``eval_paths`` simulated test episodes are scored with the
    replayed test windows.
    """

    steps_per_epoch: int = Field(ge=1)
    paths_per_step: int = Field(ge=1)
    # Simulated episodes per start state (deep hedging's PerStateObjective); divides
    # paths_per_step and val_paths.
    paths_per_state: int = Field(ge=1)
    val_paths: int = Field(ge=1)
    eval_paths: int = Field(ge=1)
    width: int = Field(ge=1)
    n_layers: int = Field(ge=1)
    patience: int = Field(ge=1)
    # torch intra-op threads while training (None: torch's default). One for batches of a few
    # thousand episodes on 2 shared cores, where a second thread spin-waits more than it helps.
    num_threads: int | None = Field(ge=1)


class SpecialistBudget(SpecialistSizes):
    """One weekly code's hedging agent: the sizes, the epoch cap, and the episode shape used
    where the user sets none."""

    max_epochs: int = Field(ge=1)
    n_steps: int = Field(ge=1)  # decisions per episode
    rebalance_bars: int = Field(ge=1)  # bars between decisions


class PortfolioBudget(_Budget):
    """The portfolio stages: meta-controller, joint model (per curriculum phase) and ensemble,
    every field taken as it is (the merged stage config holds these fields).

    Epochs are ``steps_per_epoch`` steps of ``paths_per_step`` simulated portfolio windows;
    ``val_paths`` fixed simulated validation windows pick the best epoch; ``eval_paths``
    simulated test windows are scored with the replayed ones; ``members`` joint models (one
    per seed) make the ensemble.
    """

    meta_epochs: int = Field(ge=1)
    joint_epochs_per_phase: int = Field(ge=1)
    steps_per_epoch: int = Field(ge=1)
    paths_per_step: int = Field(ge=1)
    val_paths: int = Field(ge=1)
    eval_paths: int = Field(ge=1)
    width: int = Field(ge=1)
    n_layers: int = Field(ge=1)
    patience: int = Field(ge=1)
    members: int = Field(ge=1, description="joint models (one per seed) in the ensemble")
    num_threads: int | None = Field(ge=1)


@dataclass(frozen=True)
class Profile:
    name: str
    cnn_lstm: CnnLstmBudget
    specialist: SpecialistBudget
    portfolio: PortfolioBudget


# Every knob once, with its (smoke, default, full) values side by side.
_CNN_LSTM: dict[str, tuple[Any, Any, Any]] = {
    "max_epochs": (3, 40, 200),
    "max_windows": (768, None, None),
    "max_sequence_length": (32, 96, 256),
    "conv_channels": (16, 32, 64),
    "lstm_hidden": (16, 64, 128),
    "lstm_layers": (1, 1, 2),
    "attention_heads": (2, 4, 8),
    "embedding_dim": (16, 32, 64),
    "mc_samples": (8, 30, 100),
    "max_hpo_trials": (2, 8, 50),
    "patience": (2, 6, 15),
}
_SPECIALIST: dict[str, tuple[Any, Any, Any]] = {
    "max_epochs": (4, 30, 200),
    "steps_per_epoch": (4, 20, 50),
    "paths_per_step": (512, 4096, 20_000),
    "paths_per_state": (64, 64, 100),
    "val_paths": (1024, 16_384, 50_000),
    "eval_paths": (2048, 50_000, 200_000),
    "n_steps": (6, 12, 12),
    "rebalance_bars": (6, 6, 6),
    "width": (16, 32, 64),
    "n_layers": (2, 3, 4),
    "patience": (3, 6, 20),
    "num_threads": (1, 1, None),
}
_PORTFOLIO: dict[str, tuple[Any, Any, Any]] = {
    "meta_epochs": (2, 15, 100),
    "joint_epochs_per_phase": (1, 5, 30),
    "steps_per_epoch": (2, 10, 40),
    "paths_per_step": (256, 2048, 16_384),
    "val_paths": (512, 8192, 50_000),
    "eval_paths": (1024, 20_000, 200_000),
    "width": (16, 32, 64),
    "n_layers": (2, 2, 3),
    "patience": (2, 4, 10),
    # Two seeds keep `make run` within 15 minutes on 2 cores (benchmarks/pipeline.md); with 3
    # epochs per phase instead, no phase beat the meta-controller.
    "members": (2, 2, 5),
    "num_threads": (1, 1, None),
}

PROFILES: dict[str, Profile] = {
    name: Profile(
        name,
        CnnLstmBudget(**{knob: values[i] for knob, values in _CNN_LSTM.items()}),
        SpecialistBudget(**{knob: values[i] for knob, values in _SPECIALIST.items()}),
        PortfolioBudget(**{knob: values[i] for knob, values in _PORTFOLIO.items()}),
    )
    for i, name in enumerate(PROFILE_NAMES)
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, or ``HEDGE_PROFILE``'s, with a clear error for an unknown name."""
    name = name or Settings.from_env().profile
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]
