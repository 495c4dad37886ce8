"""Profiles size every training stage (DESIGN §6).

* ``smoke``: the whole lineage in about a minute on 2 CPU cores, for tests and CI.
* ``default``: minutes on a laptop; models that actually learn.
* ``full``: GPU hours; larger models, more epochs, hyper-parameter search.

A portfolio template's ``training_params`` say what the researcher wants (sequence length,
horizon, batch size, learning rate, epochs, HPO trials); the profile is the budget that caps
them and sizes the networks. ``HEDGE_PROFILE`` picks the profile (default ``default``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

PROFILE_NAMES = ("smoke", "default", "full")


@dataclass(frozen=True)
class CnnLstmBudget:
    max_epochs: int
    max_windows: int | None  # per split, deterministic subsample; None: all
    max_sequence_length: int
    conv_channels: int
    lstm_hidden: int
    lstm_layers: int
    attention_heads: int
    embedding_dim: int
    mc_samples: int
    max_hpo_trials: int
    patience: int


@dataclass(frozen=True)
class Profile:
    name: str
    cnn_lstm: CnnLstmBudget


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        CnnLstmBudget(
            max_epochs=3,
            max_windows=768,
            max_sequence_length=32,
            conv_channels=16,
            lstm_hidden=16,
            lstm_layers=1,
            attention_heads=2,
            embedding_dim=16,
            mc_samples=8,
            max_hpo_trials=2,
            patience=2,
        ),
    ),
    "default": Profile(
        "default",
        CnnLstmBudget(
            max_epochs=40,
            max_windows=None,
            max_sequence_length=96,
            conv_channels=32,
            lstm_hidden=64,
            lstm_layers=1,
            attention_heads=4,
            embedding_dim=32,
            mc_samples=30,
            max_hpo_trials=8,
            patience=6,
        ),
    ),
    "full": Profile(
        "full",
        CnnLstmBudget(
            max_epochs=200,
            max_windows=None,
            max_sequence_length=256,
            conv_channels=64,
            lstm_hidden=128,
            lstm_layers=2,
            attention_heads=8,
            embedding_dim=64,
            mc_samples=100,
            max_hpo_trials=50,
            patience=15,
        ),
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, or ``HEDGE_PROFILE``'s, with a clear error for an unknown name."""
    name = name or os.environ.get("HEDGE_PROFILE", "default")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]


def cnn_lstm_stage_config(
    profile: Profile,
    *,
    sequence_length: int,
    horizon: int,
    batch_size: int,
    learning_rate: float,
    epochs: int,
    hpo_trials: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``cnn_lstm`` stage's configuration: the template's wishes within the profile's budget."""
    budget = profile.cnn_lstm
    return {
        "sequence_length": min(sequence_length, budget.max_sequence_length),
        "horizon": horizon,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "epochs": min(epochs, budget.max_epochs),
        "patience": budget.patience,
        "max_windows": budget.max_windows,
        "mc_samples": budget.mc_samples,
        "hpo_trials": min(hpo_trials, budget.max_hpo_trials),
        "seed": seed,
        "model": {
            "conv_channels": budget.conv_channels,
            "lstm_hidden": budget.lstm_hidden,
            "lstm_layers": budget.lstm_layers,
            "attention_heads": budget.attention_heads,
            "embedding_dim": budget.embedding_dim,
            "dropout": 0.1,
        },
    }
