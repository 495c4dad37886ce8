"""The CNN-LSTM stage's typed contract: the template's wishes within the profile's budget."""

from __future__ import annotations

import pytest

from hedge_pipeline.harness.config import ConfigError
from hedge_pipeline.runtime.profiles import get_profile
from hedge_pipeline.stages.cnn_lstm.asset import CnnLstmModelConfig
from hedge_pipeline.stages.cnn_lstm.config import (
    CnnLstmChoices,
    CnnLstmStageConfig,
    model_config,
    train_config,
)
from hedge_pipeline.stages.selection.templates import TrainingParams

SMOKE = get_profile("smoke")
BUDGET = SMOKE.cnn_lstm


def test_cap_rules() -> None:
    params = TrainingParams(sequence_length=500, epochs=500, hpo_trials=50, learning_rate=0.01)
    merged = CnnLstmStageConfig.within(CnnLstmChoices(), params, SMOKE)
    assert (merged.sequence_length, merged.epochs, merged.hpo_trials) == (
        BUDGET.max_sequence_length,
        BUDGET.max_epochs,
        BUDGET.max_hpo_trials,
    )
    assert merged.learning_rate == 0.01
    chosen = CnnLstmStageConfig.within(
        CnnLstmModelConfig(epochs=1, learning_rate=0.5, hpo_trials=0, seed=3), params, SMOKE
    )
    assert (chosen.epochs, chosen.learning_rate, chosen.hpo_trials, chosen.seed) == (1, 0.5, 0, 3)


def test_the_typed_configs_the_child_builds() -> None:
    cfg = CnnLstmStageConfig.within(CnnLstmChoices(), TrainingParams(), SMOKE).as_dict()
    assert train_config(cfg).weight_decay == 1e-4
    assert model_config(cfg).lstm_hidden == BUDGET.lstm_hidden
    assert model_config(cfg, lstm_hidden=4).lstm_hidden == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sequence_lenght": 8}, "sequence_lenght: unknown field (got 8)"),
        ({"batch_size": "big"}, "batch_size: Input should be a valid integer"),
        ({"model": {"conv_channels": 4}}, "model.lstm_hidden: Field required"),
        ({"hpo_trials": -1}, "hpo_trials: Input should be greater than or equal to 0"),
    ],
)
def test_the_child_refuses_what_no_data_could_fix(change: dict, message: str) -> None:
    good = CnnLstmStageConfig.within(CnnLstmChoices(), TrainingParams(), SMOKE).as_dict()
    with pytest.raises(ConfigError, match="invalid CnnLstmStageConfig") as error:
        CnnLstmStageConfig.parse(good | change)
    assert message in str(error.value)
