"""The portfolio-model stages' contract: the user's choices, and the merged config of the
meta-controller, joint and ensemble children (one contract: the three stages hedge the same
portfolio under the same objective, so a run's choices must mean the same in each).

``PortfolioModelChoices`` is what a user sets (the assets' run config exposes these fields);
``PortfolioModelStageConfig`` adds the profile's budget (``runtime.profiles.PortfolioBudget``).
Every child validates what it receives before reading any data (``harness.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field

from hedge_pipeline.harness.config import ChildInputs, StageConfig
from hedge_pipeline.runtime.profiles import PortfolioBudget, Profile
from hedge_pipeline.stages.specialists.config import HedgingCosts


class PortfolioModelChoices(HedgingCosts):
    """The portfolio's objective, limits and training as a user chooses them."""

    max_position: float | None = Field(
        default=None,
        gt=0.0,
        description="largest |position| in the underlying; default 2 x options held",
    )
    var_limit: float | None = Field(
        default=None, description="loss limit; default BS delta's VaR on validation windows"
    )
    var_level: float = Field(
        default=0.95, ge=0.5, lt=1.0, description="compliance rate asked of the VaR limit"
    )
    risk_penalty: float = Field(default=1.0, ge=0.0, description="weight of VaR-limit breaches")
    cost_weight: float = Field(default=1.0, ge=0.0, description="weight of costs in the objective")
    diversification_bonus: float = 0.0
    learning_rate: float = Field(default=3e-3, gt=0.0)
    joint_learning_rate: float = Field(
        default=3e-4,
        gt=0.0,
        description="joint model: the controller's (the meta-controller stage left it "
        "converged at learning_rate; a step that size only moves it off its optimum)",
    )
    specialist_learning_rate: float = Field(default=3e-4, ge=0.0, description="joint model only")
    alternate: bool = Field(default=False, description="joint: alternate meta/specialist steps")
    turbulence_quantile: float = Field(
        default=0.99,
        gt=0.0,
        le=1.0,
        description="ensemble guard threshold (the guard is kept only if it does not raise "
        "the ensemble's validation ES10)",
    )
    promotion_margin: float = Field(
        default=0.01, ge=0.0, description="relative ES10 margin to promote"
    )
    underlying: str | None = Field(default=None, description="default: most selected codes")
    seed: int = 0


class PortfolioModelStageConfig(PortfolioModelChoices, PortfolioBudget, StageConfig):
    """What the ``meta_controller``, ``joint`` and ``ensemble`` children train on: the choices
    and every field of the profile's :class:`PortfolioBudget`."""

    @classmethod
    def within(cls, choices: PortfolioModelChoices, profile: Profile) -> Self:
        """The choices as given; every size (epochs, paths, network, members) is the
        profile's: the portfolio stages expose no size to the user."""
        chosen = choices.model_dump(include=set(PortfolioModelChoices.model_fields))
        return cls.parse(chosen | profile.portfolio.model_dump())


class MetaControllerInputs(ChildInputs):
    """The ``meta_controller`` child's extras: the book rows of every selected code, the
    selection, the specialist version of each code, and the config."""

    features: Path
    selection: Path
    specialists: dict[str, int]  # weekly code -> hedge-specialist version
    config: PortfolioModelStageConfig


class JointInputs(MetaControllerInputs):
    """The ``joint`` child's: those, and the meta-controller version it starts from."""

    meta_controller_version: int | str


class EnsembleInputs(JointInputs):
    """The ``ensemble`` child's: those, and the joint models it weights."""

    joint_versions: list[int | str] = Field(min_length=1)
