"""Profiles size every training stage (docs/design.md §6).

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
class SpecialistBudget:
    """One weekly code's hedging agent: episode shape, training and evaluation sizes.

    An epoch is ``steps_per_epoch`` optimizer steps of ``paths_per_step`` fresh simulated
    episodes (PPO: iterations of that many paths); ``val_paths`` fixed simulated validation
    episodes pick the best epoch; ``eval_paths`` simulated test episodes are scored with the
    replayed test windows.
    """

    max_epochs: int
    steps_per_epoch: int
    paths_per_step: int
    val_paths: int
    eval_paths: int
    n_steps: int  # decisions per episode
    rebalance_bars: int  # bars between decisions
    width: int
    n_layers: int
    patience: int
    # Simulated episodes per start state (deep hedging's PerStateObjective); divides
    # paths_per_step and val_paths.
    paths_per_state: int = 64
    # torch intra-op threads while training (None: torch's default). One for batches of a few
    # thousand episodes on 2 shared cores, where a second thread spin-waits more than it helps.
    num_threads: int | None = 1


@dataclass(frozen=True)
class PortfolioBudget:
    """The portfolio stages: meta-controller, joint model (per curriculum phase) and ensemble.

    Epochs are ``steps_per_epoch`` steps of ``paths_per_step`` simulated portfolio windows;
    ``val_paths`` fixed simulated validation windows pick the best epoch; ``eval_paths``
    simulated test windows are scored with the replayed ones; ``members`` joint models (one
    per seed) make the ensemble.
    """

    meta_epochs: int
    joint_epochs_per_phase: int
    steps_per_epoch: int
    paths_per_step: int
    val_paths: int
    eval_paths: int
    width: int
    n_layers: int
    patience: int
    members: int
    num_threads: int | None = 1


@dataclass(frozen=True)
class Profile:
    name: str
    cnn_lstm: CnnLstmBudget
    specialist: SpecialistBudget
    portfolio: PortfolioBudget


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
        SpecialistBudget(
            max_epochs=4,
            steps_per_epoch=4,
            paths_per_step=512,
            val_paths=1024,
            eval_paths=2048,
            n_steps=6,
            rebalance_bars=6,
            width=16,
            n_layers=2,
            patience=3,
        ),
        PortfolioBudget(
            meta_epochs=2,
            joint_epochs_per_phase=1,
            steps_per_epoch=2,
            paths_per_step=256,
            val_paths=512,
            eval_paths=1024,
            width=16,
            n_layers=2,
            patience=2,
            members=2,
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
        SpecialistBudget(
            max_epochs=30,
            steps_per_epoch=20,
            paths_per_step=4096,
            val_paths=16_384,
            eval_paths=50_000,
            n_steps=12,
            rebalance_bars=6,
            width=32,
            n_layers=3,
            patience=6,
        ),
        PortfolioBudget(
            meta_epochs=15,
            joint_epochs_per_phase=5,
            steps_per_epoch=10,
            paths_per_step=2048,
            val_paths=8192,
            eval_paths=20_000,
            width=32,
            n_layers=2,
            patience=4,
            # Two seeds keep `make run` within 15 minutes on 2 cores (benchmarks/pipeline.md);
            # with 3 epochs per phase instead, no phase beat the meta-controller.
            members=2,
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
        SpecialistBudget(
            max_epochs=200,
            steps_per_epoch=50,
            paths_per_step=20_000,
            val_paths=50_000,
            eval_paths=200_000,
            n_steps=12,
            rebalance_bars=6,
            width=64,
            n_layers=4,
            patience=20,
            paths_per_state=100,
            num_threads=None,
        ),
        PortfolioBudget(
            meta_epochs=100,
            joint_epochs_per_phase=30,
            steps_per_epoch=40,
            paths_per_step=16_384,
            val_paths=50_000,
            eval_paths=200_000,
            width=64,
            n_layers=3,
            patience=10,
            members=5,
            num_threads=None,
        ),
    ),
}


def portfolio_stage_config(profile: Profile, **choices: Any) -> dict[str, Any]:
    """The portfolio stages' configuration: the run's ``choices`` (the asset's config) within
    the profile's budget."""
    budget = profile.portfolio
    return {
        **choices,
        "meta_epochs": budget.meta_epochs,
        "joint_epochs_per_phase": budget.joint_epochs_per_phase,
        "steps_per_epoch": budget.steps_per_epoch,
        "paths_per_step": budget.paths_per_step,
        "val_paths": budget.val_paths,
        "eval_paths": budget.eval_paths,
        "width": budget.width,
        "n_layers": budget.n_layers,
        "patience": budget.patience,
        "members": budget.members,
        "num_threads": budget.num_threads,
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


def specialist_stage_config(
    profile: Profile,
    *,
    algorithm: str,
    criterion: str,
    cost: float,
    slippage: float,
    fixed_fee: float,
    head: str,
    hedge_option: bool,
    learning_rate: float,
    epochs: int | None,
    n_steps: int | None,
    rebalance_bars: int | None,
    objective: str = "per_state",
    seed: int = 0,
) -> dict[str, Any]:
    """The ``specialist`` stage's configuration: the run's choices within the profile's budget."""
    budget = profile.specialist
    return {
        "algorithm": algorithm,
        "criterion": criterion,
        "cost": cost,
        "slippage": slippage,
        "fixed_fee": fixed_fee,
        "head": head,
        "hedge_option": hedge_option,
        "learning_rate": learning_rate,
        "objective": objective,
        "epochs": min(epochs or budget.max_epochs, budget.max_epochs),
        "steps_per_epoch": budget.steps_per_epoch,
        "paths_per_step": budget.paths_per_step,
        "paths_per_state": budget.paths_per_state,
        "val_paths": budget.val_paths,
        "eval_paths": budget.eval_paths,
        "n_steps": n_steps or budget.n_steps,
        "rebalance_bars": rebalance_bars or budget.rebalance_bars,
        "width": budget.width,
        "n_layers": budget.n_layers,
        "patience": budget.patience,
        "mc_samples": profile.cnn_lstm.mc_samples,
        "num_threads": budget.num_threads,
        "seed": seed,
    }
