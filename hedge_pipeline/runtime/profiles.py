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
from typing import get_args

from hedge_pipeline.runtime.settings import ProfileName, Settings

PROFILE_NAMES: tuple[str, ...] = get_args(ProfileName)


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


def get_profile(name: str | None = None) -> Profile:
    """The named profile, or ``HEDGE_PROFILE``'s, with a clear error for an unknown name."""
    name = name or Settings.from_env().profile
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILE_NAMES)}")
    return PROFILES[name]
