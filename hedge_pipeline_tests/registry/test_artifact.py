"""A registered folder's typed spec: written and read through one type, checked whole on read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from hedge_pipeline.hedging.simulator import Instrument
from hedge_pipeline.registry.artifact import (
    SPEC_FILE,
    ArtifactSpecError,
    load_weights,
    save_artifact,
)
from hedge_pipeline.stages.specialists.artifact import BookSpec, Costs, SpecialistSpec


def _spec() -> SpecialistSpec:
    return SpecialistSpec(
        algorithm="deep_hedging",
        head="mlp",
        width=8,
        n_layers=2,
        weekly_code="3CN5",
        symbols=["3CN5_C110", "3CN5_P109"],
        book=BookSpec(strikes=[110.0, 109.0], is_call=[True, False], weights=[1.0, 1.0]),
        sigma_ref=0.2,
        n_steps=10,
        rebalance_bars=6,
        costs=Costs(cost=1e-3, slippage=0.0, fixed_fee=0.0),
        context=["rv_forecast"],
        instrument=Instrument(strike=111.0, is_call=True),
        calibration={"theta": 0.04, "bars": 120},
    )


def test_a_saved_folder_reads_back_to_the_same_spec_and_weights(tmp_path: Path):
    model = nn.Linear(3, 2)
    save_artifact(model, _spec(), tmp_path)
    assert SpecialistSpec.read(tmp_path) == _spec()
    assert SpecialistSpec.read(tmp_path).problem() == _spec().problem()
    weights = load_weights(tmp_path)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # Integers stay integers in the file (bars), floats floats.
    assert json.loads((tmp_path / SPEC_FILE).read_text())["calibration"]["bars"] == 120


def test_an_unknown_key_and_a_wrong_type_name_the_file_and_the_fields(tmp_path: Path):
    _spec().write(tmp_path)
    document = json.loads((tmp_path / SPEC_FILE).read_text())
    document["surprise"] = 1
    document["book"]["strikes"] = ["110", "not a strike"]
    document["algorithm"] = "sarsa"
    (tmp_path / SPEC_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactSpecError) as error:
        SpecialistSpec.read(tmp_path)
    message = str(error.value)
    assert str(tmp_path / SPEC_FILE) in message
    assert "invalid SpecialistSpec" in message
    assert "surprise: unknown field" in message
    assert "book.strikes.1" in message and "'not a strike'" in message
    assert "algorithm" in message and "'sarsa'" in message


def test_a_folder_without_a_spec_is_named(tmp_path: Path):
    with pytest.raises(ArtifactSpecError, match=r"config\.json: missing"):
        SpecialistSpec.read(tmp_path)
