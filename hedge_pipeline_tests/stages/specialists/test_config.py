"""The specialist stage's typed contract: choices, cap rules, and what it refuses."""

from __future__ import annotations

import typing

import dagster as dg
import pytest

from hedge_pipeline.harness.config import ConfigError
from hedge_pipeline.hedging.deep_hedging import HEADS
from hedge_pipeline.runtime.profiles import get_profile
from hedge_pipeline.stages.selection.templates import load_template
from hedge_pipeline.stages.specialists.asset import SpecialistConfig
from hedge_pipeline.stages.specialists.config import (
    Head,
    SpecialistChoices,
    SpecialistInputs,
    SpecialistStageConfig,
)

SMOKE = get_profile("smoke")


def test_heads_are_the_hedgers_networks() -> None:
    assert set(typing.get_args(Head)) == set(HEADS)


def test_cap_rules() -> None:
    budget = SMOKE.specialist
    unset = SpecialistStageConfig.within(SpecialistChoices(), SMOKE)
    assert (unset.epochs, unset.n_steps, unset.rebalance_bars) == (
        budget.max_epochs,
        budget.n_steps,
        budget.rebalance_bars,
    )
    asked = SpecialistStageConfig.within(
        SpecialistChoices(epochs=budget.max_epochs + 50, n_steps=3, rebalance_bars=2), SMOKE
    )
    assert (asked.epochs, asked.n_steps, asked.rebalance_bars) == (budget.max_epochs, 3, 2)
    assert asked.paths_per_step == budget.paths_per_step
    assert asked.mc_samples == SMOKE.cnn_lstm.mc_samples


def test_a_template_sets_the_episode_shape_between_the_run_config_and_the_profile() -> None:
    daily = load_template("daily_history").training_params
    assert (daily.n_steps, daily.rebalance_bars) == (1, 1)
    merged = SpecialistStageConfig.within(SpecialistChoices(), SMOKE, daily)
    assert (merged.n_steps, merged.rebalance_bars) == (1, 1)
    asked = SpecialistStageConfig.within(SpecialistChoices(n_steps=2), SMOKE, daily)
    assert (asked.n_steps, asked.rebalance_bars) == (2, 1)
    # A template that says nothing leaves the profile's shape, and the config (and its hash).
    atm = load_template("atm_book").training_params
    plain = SpecialistStageConfig.within(SpecialistChoices(), SMOKE)
    assert SpecialistStageConfig.within(SpecialistChoices(), SMOKE, atm) == plain


def test_zero_is_a_value_not_unset() -> None:
    """``epochs=0`` used to mean "the profile's" through an ``or``; now it is refused."""
    with pytest.raises(ValueError, match="epochs"):
        SpecialistChoices(epochs=0)


def test_the_asset_config_is_the_choices_plus_the_upstream_version() -> None:
    assert set(SpecialistConfig.model_fields) == set(SpecialistChoices.model_fields) | {
        "cnn_lstm_version"
    }
    merged = SpecialistStageConfig.within(SpecialistConfig(cnn_lstm_version=3), SMOKE)
    assert "cnn_lstm_version" not in merged.as_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cosst": 1e-3}, "cosst: unknown field (got 0.001)"),
        ({"width": "wide"}, "width: Input should be a valid integer"),
        ({"hedge_option": "maybe"}, "hedge_option: Input should be a valid boolean"),
        ({"criterion": "es:2"}, "criterion: "),
    ],
)
def test_the_child_refuses_what_no_data_could_fix(change: dict, message: str) -> None:
    good = SpecialistStageConfig.within(SpecialistChoices(), SMOKE).as_dict()
    with pytest.raises(ConfigError, match="invalid SpecialistStageConfig") as error:
        SpecialistStageConfig.parse(good | change)
    assert message in str(error.value)


def test_the_launchpad_refuses_an_unknown_algorithm_before_anything_runs() -> None:
    """The run config is checked against the asset's schema before any step starts."""
    from hedge_pipeline.definitions import defs

    job = defs.resolve_job_def("specialists_job")
    ok = {"ops": {"specialist_agents": {"config": {"algorithm": "ppo"}}}}
    assert dg.validate_run_config(job, ok)
    bad = {"ops": {"specialist_agents": {"config": {"algorithm": "sac"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="algorithm"):
        dg.validate_run_config(job, bad)


def test_the_childs_extras_are_typed_too() -> None:
    """Not only the config: paths, the upstream version and the identity are checked, and a key
    the child does not know is refused (a misspelt one would otherwise be ignored)."""
    extras = {
        "features": "f.parquet",
        "selection": "s.parquet",
        "cnn_lstm_version": 3,
        "config": SpecialistStageConfig.within(SpecialistChoices(), SMOKE).as_dict(),
        "identity": {
            "dagster_run_id": "r",
            "dagster_asset": "specialist_agents",
            "data_version": "d",
            "code_version": "c",
            "weekly_code": "3CN5",
        },
        "failure_file": None,
    }
    inputs = SpecialistInputs.parse(extras)
    assert (inputs.cnn_lstm_version, inputs.identity_dict()["upstream"]) == (3, {})
    broken = extras | {"cnn_lstm_verison": 3, "identity": extras["identity"] | {"data_version": 1}}
    with pytest.raises(ConfigError, match="invalid SpecialistInputs") as error:
        SpecialistInputs.parse({k: v for k, v in broken.items() if k != "selection"})
    message = str(error.value)
    for expected in (
        "selection: Field required",
        "identity.data_version: Input should be a valid string",
        "cnn_lstm_verison: unknown field (got 3)",
    ):
        assert expected in message
