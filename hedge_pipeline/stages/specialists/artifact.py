"""The registered ``hedge-specialist-<weekly_code>`` folder: what the stage writes and what the
portfolio stages load.

The stage's public face to the rest of the lineage: a version is rebuilt through
:func:`load_policy` (weights plus the :class:`SpecialistSpec`: book, network, costs, calibration),
and its market exactly as the specialist saw it through :meth:`SpecialistSpec.market_config` and
:func:`code_market`, with the CNN-LSTM forecasts stored beside the weights (``FORECASTS_FILE``),
never through the training child's internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict
from torch import nn

from hedge_pipeline.hedging.code_history import code_history
from hedge_pipeline.hedging.code_market import CodeMarket
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.simulator import Book, HedgingProblem, Instrument
from hedge_pipeline.registry.artifact import ArtifactSpec, load_weights, save_artifact
from hedge_pipeline.stages.specialists.config import Forecasts

MODEL_PREFIX = "hedge-specialist-"


FORECASTS_FILE = "forecasts.parquet"


def model_name(weekly_code: str) -> str:
    return f"{MODEL_PREFIX}{weekly_code}"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BookSpec(_Part):
    """The short book: one entry per option, in the selection's order."""

    strikes: list[float]
    is_call: list[bool]
    weights: list[float]


class Costs(_Part):
    """Proportional cost and slippage (of traded notional) and the fixed fee per trade."""

    cost: float
    slippage: float
    fixed_fee: float


class SpecialistSpec(ArtifactSpec):
    """What rebuilds a registered specialist and the market it hedged (module docstring)."""

    algorithm: Literal["deep_hedging", "ppo"]
    head: str
    gamma_gated: bool = False
    width: int
    n_layers: int
    weekly_code: str
    symbols: list[str]
    book: BookSpec
    sigma_ref: float
    n_steps: int
    rebalance_bars: int
    costs: Costs
    mc_samples: int = 30
    seed: int = 0
    # What its rv_forecast columns held: the CNN-LSTM's, or their training mean (an ablation).
    forecasts: Forecasts = "cnn_lstm"
    context: list[str]
    instrument: Instrument | None = None
    calibration: dict[str, float | int]

    def problem(self) -> HedgingProblem:
        """The hedging problem the policy was trained on (its input and output shapes)."""
        book = self.book
        return HedgingProblem(
            book=Book(tuple(book.strikes), tuple(book.is_call), tuple(book.weights)),
            sigma=self.sigma_ref,
            n_steps=self.n_steps,
            context=tuple(self.context),
            instrument=self.instrument,
            **self.costs.model_dump(),
        )

    def market_config(self) -> dict[str, Any]:
        """The :func:`code_market` settings the specialist was trained with."""
        return {
            "rebalance_bars": self.rebalance_bars,
            "n_steps": self.n_steps,
            **self.costs.model_dump(),
            "hedge_option": self.instrument is not None,
            "mc_samples": self.mc_samples,
            "seed": self.seed,
        }


def code_market(
    features: pl.DataFrame, selection: pl.DataFrame, forecasts: pl.DataFrame, cfg: dict[str, Any]
) -> CodeMarket:
    """One code's market (:class:`CodeMarket`) with the frozen CNN-LSTM's ``forecasts`` in its
    observations; ``cfg`` holds ``rebalance_bars, n_steps, cost, slippage, fixed_fee,
    hedge_option`` (a specialist's stage config, or :meth:`SpecialistSpec.market_config`)."""
    return CodeMarket(
        code_history(features, selection, forecasts),
        cfg["rebalance_bars"],
        cfg["n_steps"],
        cost=cfg["cost"],
        slippage=cfg["slippage"],
        fixed_fee=cfg["fixed_fee"],
        hedge_option=cfg["hedge_option"],
    )


def save_policy(
    policy: nn.Module,
    cfg: dict[str, Any],
    market: CodeMarket,
    forecasts: pl.DataFrame,
    out: Path,
) -> Path:
    """The registered folder: weights plus what rebuilds the policy and its observations,
    the CNN-LSTM forecasts it saw included (``FORECASTS_FILE``), so that the portfolio stages
    replay the specialist's own inputs without running the CNN-LSTM again."""
    out.mkdir(parents=True, exist_ok=True)
    forecasts.write_parquet(out / FORECASTS_FILE)
    problem = market.problem
    spec = SpecialistSpec(
        algorithm=cfg["algorithm"],
        head=cfg["head"] if cfg["algorithm"] == "deep_hedging" else "mlp",
        gamma_gated=bool(getattr(policy, "gamma_gated", False)),
        width=cfg["width"],
        n_layers=cfg["n_layers"],
        weekly_code=market.history.weekly_code,
        symbols=list(market.history.symbols),
        book=BookSpec(
            strikes=list(problem.book.strikes),
            is_call=list(problem.book.is_call),
            weights=list(problem.book.weights),
        ),
        sigma_ref=problem.sigma,
        n_steps=problem.n_steps,
        rebalance_bars=market.k,
        costs=Costs(cost=problem.cost, slippage=problem.slippage, fixed_fee=problem.fixed_fee),
        mc_samples=cfg["mc_samples"],
        seed=cfg["seed"],
        forecasts=cfg["forecasts"],
        context=list(problem.context),
        instrument=problem.instrument,
        calibration=market.calibration.as_dict(),
    )
    return save_artifact(policy, spec, out)


def load_policy(directory: Path) -> tuple[nn.Module, SpecialistSpec]:
    """Rebuild a registered specialist's policy (eval mode) and its spec."""
    spec = SpecialistSpec.read(directory)
    policy = make_policy(
        spec.head, spec.problem(), spec.width, spec.n_layers, gamma_gated=spec.gamma_gated
    )
    policy.load_state_dict(load_weights(directory))
    return policy.eval(), spec
