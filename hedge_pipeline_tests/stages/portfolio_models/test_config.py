"""The portfolio-model stages' typed contract: the checks the children made by hand, now
made by the one model every child validates with, and the assets' run config built from it."""

from __future__ import annotations

import dagster as dg
import pytest

from hedge_pipeline.harness.config import ConfigError
from hedge_pipeline.runtime.profiles import get_profile
from hedge_pipeline.stages.portfolio_models.assets import PortfolioModelsConfig
from hedge_pipeline.stages.portfolio_models.config import (
    PortfolioModelChoices,
    PortfolioModelStageConfig,
)

SMOKE = get_profile("smoke")
GOOD = PortfolioModelStageConfig.within(PortfolioModelChoices(), SMOKE).as_dict()


def test_sizes_are_the_profiles() -> None:
    budget = SMOKE.portfolio
    merged = PortfolioModelStageConfig.within(PortfolioModelsConfig(seed=4), SMOKE)
    assert (merged.meta_epochs, merged.members, merged.val_paths, merged.seed) == (
        budget.meta_epochs,
        budget.members,
        budget.val_paths,
        4,
    )
    assert set(PortfolioModelsConfig.model_fields) == set(PortfolioModelChoices.model_fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"criterion": "var:0.1"}, "criterion: unknown criterion 'var'"),
        ({"cost_weight": -1.0}, "cost_weight: Input should be greater than or equal to 0"),
        ({"risk_penalty": -0.5}, "risk_penalty: Input should be greater than or equal to 0"),
        ({"max_position": 0.0}, "max_position: Input should be greater than 0"),
        ({"var_level": 1.0}, "var_level: Input should be less than 1"),
        ({"var_level": 0.4}, "var_level: Input should be greater than or equal to 0.5"),
        ({"members": "three"}, "members: Input should be a valid integer"),
        ({"promotion_margn": 0.02}, "promotion_margn: unknown field (got 0.02)"),
    ],
)
def test_every_child_refuses_what_no_data_could_fix(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="invalid PortfolioModelStageConfig") as error:
        PortfolioModelStageConfig.parse(GOOD | change)
    assert message in str(error.value)


def test_the_launchpad_refuses_an_unknown_field_before_anything_runs() -> None:
    from hedge_pipeline.definitions import defs

    job = defs.resolve_job_def("portfolio_training_job")
    config = {"ops": {"meta_controller": {"config": {"seed": 1}}}}
    assert dg.validate_run_config(job, config)
    config["ops"]["meta_controller"]["config"]["sed"] = 1
    with pytest.raises(dg.DagsterInvalidConfigError, match="sed"):
        dg.validate_run_config(job, config)
