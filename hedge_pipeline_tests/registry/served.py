"""Registered pyfunc versions of the served stages, built without training: each stage's own
folder (its spec and seeded weights, written by the stage's own ``save`` path), wrapped and
registered exactly as ``harness.lifecycle.train_and_register`` does it."""

from __future__ import annotations

from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.hedging.code_market import CONTEXT
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.simulator import Episodes, HedgingProblem, Instrument
from hedge_pipeline.registry import pyfunc
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import save_artifact
from hedge_pipeline.stages.cnn_lstm.artifact import CnnLstmSpec, StandardizerSpec
from hedge_pipeline.stages.cnn_lstm.market_state import FEATURE_COLUMNS, TARGET_COLUMNS
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig
from hedge_pipeline.stages.specialists.artifact import BookSpec, Costs, SpecialistSpec

CODE = "3CN5"


def specialist_spec(hedge_option: bool, code: str = CODE) -> SpecialistSpec:
    """A two-option book of ``code`` observing every context column a code market supplies."""
    return SpecialistSpec(
        algorithm="deep_hedging",
        head="mlp",
        width=8,
        n_layers=2,
        weekly_code=code,
        symbols=[f"{code}_C110", f"{code}_P109"],
        book=BookSpec(strikes=[110.0, 109.0], is_call=[True, False], weights=[1.0, 1.0]),
        sigma_ref=0.2,
        n_steps=6,
        rebalance_bars=6,
        costs=Costs(cost=1e-3, slippage=0.0, fixed_fee=0.0),
        context=list(CONTEXT),
        instrument=Instrument(strike=111.0, is_call=True) if hedge_option else None,
        calibration={"theta": 0.04, "bars": 120},
    )


def specialist_folder(out: Path, hedge_option: bool = False, code: str = CODE) -> Path:
    """A specialist's registered folder: its spec and a seeded, untrained policy."""
    spec = specialist_spec(hedge_option, code)
    torch.manual_seed(0)
    policy = make_policy(spec.head, spec.problem(), spec.width, spec.n_layers)
    return save_artifact(policy, spec, out)


def episodes(
    problem: HedgingProblem, n: int = 5, seed: int = 0, spot: torch.Tensor | None = None
) -> Episodes:
    """Random replay-like windows of ``problem``'s book: a wandering ``spot`` (drawn unless
    given), each option's own vol, every context column moving, and the hedge option's quotes
    when the problem has one."""
    g = torch.Generator().manual_seed(seed)
    steps, k = problem.n_steps, len(problem.book.strikes)
    if spot is None:
        spot = 110.0 * torch.exp(torch.cumsum(0.01 * torch.randn(n, steps + 1, generator=g), 1))
    tau = torch.linspace(0.05, 0.01, steps + 1).expand(n, -1)
    option = {}
    if problem.instrument is not None:
        option = {
            "instrument_price": torch.rand(n, steps + 1, generator=g),
            "instrument_vol": 0.15 + 0.1 * torch.rand(n, steps + 1, generator=g),
            "instrument_cost": 0.01 * torch.rand(n, steps + 1, generator=g),
        }
    return Episodes(
        spot=spot,
        tau=tau,
        vol=0.15 + 0.1 * torch.rand(n, steps + 1, k, generator=g),
        premium=torch.zeros(n),
        terminal_value=torch.zeros(n),
        context=torch.rand(n, steps, len(problem.context), generator=g),
        **option,
    )


def cnn_lstm_folder(out: Path, sequence_length: int = 8) -> Path:
    """A CNN-LSTM's registered folder: a small seeded network and standardizers."""
    config = CnnLstmConfig(
        sequence_length=sequence_length, conv_channels=8, lstm_hidden=8, embedding_dim=8
    )
    torch.manual_seed(0)
    n, m = len(FEATURE_COLUMNS), len(TARGET_COLUMNS)
    spec = CnnLstmSpec(
        model=config,
        feature_columns=list(FEATURE_COLUMNS),
        target_columns=list(TARGET_COLUMNS),
        horizon=4,
        inputs=StandardizerSpec(mean=[0.1 * i for i in range(n)], std=[1.0 + i for i in range(n)]),
        targets=StandardizerSpec(mean=[0.2, 0.0][:m], std=[0.05, 0.01][:m]),
    )
    return save_artifact(CnnLstm(config), spec, out)


def register_served(
    client: MlflowClient, name: str, folder: Path, workdir: Path, alias: str | None = None
) -> ModelVersion:
    """``folder`` wrapped as the lifecycle wraps it and registered from a fresh run of
    ``name``'s experiment; ``alias`` (e.g. ``champion``) is set besides ``candidate``."""
    module = pyfunc.serving_module(name)
    assert module is not None, f"no serving module for {name}"
    wrapped = pyfunc.package(folder, module, workdir / f"pyfunc-{folder.parent.name}")
    run_id = client.create_run(registry.ensure_experiment(client, name)).info.run_id
    version = registry.register_version(client, name, run_id, wrapped, {"config_hash": "cfg"})
    client.set_terminated(run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version
