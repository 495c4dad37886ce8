"""The specialist stage's contract: the user's choices, and the merged config its child trains on.

``SpecialistChoices`` is what a user sets (the asset's run config exposes exactly these fields,
so the launchpad refuses an unknown algorithm before anything runs); ``SpecialistStageConfig``
adds the profile's budget (``runtime.profiles.SpecialistBudget``) under the cap rules of
:meth:`SpecialistStageConfig.within`. The child validates the merged config it receives before it
reads any data (``harness.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hedge_pipeline.harness.config import ChildInputs, StageConfig, check_criterion, given
from hedge_pipeline.runtime.profiles import Profile, SpecialistSizes
from hedge_pipeline.stages.selection.templates import TrainingParams

Algorithm = Literal["deep_hedging", "ppo"]
Head = Literal["mlp", "ntb"]  # hedging.deep_hedging.HEADS (a test keeps the two equal)
Objective = Literal["per_state", "pooled"]
Forecasts = Literal["cnn_lstm", "training_mean"]


class HedgingCosts(BaseModel):
    """The criterion a hedge is judged by and what trading costs: one meaning for the
    specialists and for the portfolio stages built on them (docs/design.md §7)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    criterion: str = Field(default="es:0.1", description="entropic:A, es:P or meanvar:L")
    cost: float = Field(
        default=5e-4, ge=0.0, description="proportional cost per unit traded x spot"
    )
    slippage: float = Field(default=0.0, ge=0.0, description="x (units traded)^2 x spot")
    fixed_fee: float = Field(default=0.0, ge=0.0, description="per trade")

    @field_validator("criterion")
    @classmethod
    def _criterion(cls, value: str) -> str:
        return check_criterion(value)


class SpecialistChoices(HedgingCosts):
    """The hedging problem and the trainer as a user chooses them; sizes come from the profile."""

    algorithm: Algorithm = Field(default="deep_hedging", description="deep_hedging or ppo")
    hedge_option: bool = Field(
        default=True,
        description="also trade the template's hedge option (delta-gamma) when it names one",
    )
    head: Head = Field(
        default="mlp", description="deep hedger's network: mlp (BS delta + a correction) or ntb"
    )
    learning_rate: float = Field(default=3e-3, gt=0.0)
    objective: Objective = Field(
        default="per_state",
        description="deep hedging's loss: per_state (the criterion's gain over BS delta from "
        "each start state, every state alike) or pooled (the criterion of the whole batch, "
        "whose tail is the riskiest states': better where the pooled tail lives, a portfolio's)",
    )
    forecasts: Forecasts = Field(
        default="cnn_lstm",
        description="the realized-vol forecast the hedgers see: cnn_lstm, or training_mean "
        "(the CNN-LSTM's mean forecast over the code's training bars, on every bar: the "
        "ablation that retrains this stage and every one built on it without the forecast)",
    )
    epochs: int | None = Field(default=None, ge=1, description="default and cap: the profile's")
    n_steps: int | None = Field(default=None, ge=1, description="decisions per episode")
    rebalance_bars: int | None = Field(default=None, ge=1, description="bars between decisions")
    warm_start: bool | None = Field(
        default=None,
        description="start from the predecessor's specialist (an earlier code's of the same "
        "underlying and shape, expired before this code's first bar); default: the template's",
    )
    seed: int = 0


class SpecialistStageConfig(SpecialistChoices, SpecialistSizes, StageConfig):
    """What the ``specialist`` child trains on: the choices, resolved, within the budget."""

    epochs: int = Field(ge=1)
    n_steps: int = Field(ge=1)
    rebalance_bars: int = Field(ge=1)
    warm_start: bool = False
    mc_samples: int = Field(ge=1, description="the CNN-LSTM's MC-dropout samples per forecast")

    @classmethod
    def within(
        cls, choices: SpecialistChoices, profile: Profile, params: TrainingParams | None = None
    ) -> Self:
        """The cap rules, all of them:

        * ``epochs``: the choice, capped at the budget's ``max_epochs``; unset means the cap;
        * ``n_steps`` and ``rebalance_bars``: the choice, else the template's ``params`` (a
          template for daily codes needs short episodes), else the budget's (episode shape is
          the problem's, not a cost, so it is not capped);
        * ``warm_start``: the choice, else the template's (off unless it says so);
        * every size (:class:`SpecialistSizes`: paths, network, patience, threads) is the
          profile's, and so are the CNN-LSTM's MC samples per forecast.
        """
        budget, template = profile.specialist, params or TrainingParams()
        chosen = choices.model_dump(include=set(SpecialistChoices.model_fields))
        sizes = budget.model_dump(include=set(SpecialistSizes.model_fields))
        return cls.parse(
            chosen
            | sizes
            | {
                "epochs": min(given(choices.epochs, budget.max_epochs), budget.max_epochs),
                "n_steps": given(choices.n_steps, given(template.n_steps, budget.n_steps)),
                "rebalance_bars": given(
                    choices.rebalance_bars, given(template.rebalance_bars, budget.rebalance_bars)
                ),
                "warm_start": given(choices.warm_start, template.warm_start),
                "mc_samples": profile.cnn_lstm.mc_samples,
            }
        )


class SpecialistInputs(ChildInputs):
    """The ``specialist`` child's extras: the code's exported book and feature rows, the
    ``hedge-cnn-lstm`` version whose forecasts enter the observations, and the config."""

    features: Path
    selection: Path
    cnn_lstm_version: int | str  # a version number or an alias
    config: SpecialistStageConfig
