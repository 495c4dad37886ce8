"""The registered ``hedge-specialist-<weekly_code>`` folder: what the stage writes and what the
portfolio stages load.

The stage's public face to the rest of the lineage: a version is rebuilt through
:func:`load_policy` (weights plus the spec: book, network, costs, calibration), and its market
exactly as the specialist saw it through :func:`market_config` and :func:`code_market`, with the
CNN-LSTM forecasts stored beside the weights (``FORECASTS_FILE``), never through the training
child's internals.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn

from hedge_pipeline.hedging.code_history import code_history
from hedge_pipeline.hedging.code_market import CodeMarket
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.simulator import Book, HedgingProblem, Instrument
from hedge_pipeline.registry import versions as registry

MODEL_PREFIX = "hedge-specialist-"


FORECASTS_FILE = "forecasts.parquet"


def model_name(weekly_code: str) -> str:
    return f"{MODEL_PREFIX}{weekly_code}"


def market_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The :func:`code_market` settings a registered specialist was trained with (its spec)."""
    return {
        "rebalance_bars": spec["rebalance_bars"],
        "n_steps": spec["n_steps"],
        **spec["costs"],
        "hedge_option": spec.get("instrument") is not None,
        "mc_samples": spec.get("mc_samples", 30),
        "seed": spec.get("seed", 0),
    }


def code_market(
    features: pl.DataFrame, selection: pl.DataFrame, forecasts: pl.DataFrame, cfg: dict[str, Any]
) -> CodeMarket:
    """One code's market (:class:`CodeMarket`) with the frozen CNN-LSTM's ``forecasts`` in its
    observations; ``cfg`` holds ``rebalance_bars, n_steps, cost, slippage, fixed_fee,
    hedge_option`` (a specialist's stage config, or :func:`market_config` of its spec)."""
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
    torch.save(policy.state_dict(), out / registry.WEIGHTS_FILE)
    forecasts.write_parquet(out / FORECASTS_FILE)
    problem = market.problem
    spec = {
        "algorithm": cfg["algorithm"],
        "head": cfg["head"] if cfg["algorithm"] == "deep_hedging" else "mlp",
        "gamma_gated": bool(getattr(policy, "gamma_gated", False)),
        "width": cfg["width"],
        "n_layers": cfg["n_layers"],
        "weekly_code": market.history.weekly_code,
        "symbols": list(market.history.symbols),
        "book": {
            "strikes": list(problem.book.strikes),
            "is_call": list(problem.book.is_call),
            "weights": list(problem.book.weights),
        },
        "sigma_ref": problem.sigma,
        "n_steps": problem.n_steps,
        "rebalance_bars": market.k,
        "costs": {
            "cost": problem.cost,
            "slippage": problem.slippage,
            "fixed_fee": problem.fixed_fee,
        },
        "mc_samples": cfg["mc_samples"],
        "seed": cfg["seed"],
        "context": list(problem.context),
        "instrument": asdict(problem.instrument) if problem.instrument else None,
        "calibration": market.calibration.as_dict(),
    }
    (out / "config.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out


def load_policy(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a registered specialist's policy (eval mode) and its spec."""
    spec = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    book = spec["book"]
    problem = HedgingProblem(
        book=Book(tuple(book["strikes"]), tuple(book["is_call"]), tuple(book["weights"])),
        sigma=spec["sigma_ref"],
        n_steps=spec["n_steps"],
        context=tuple(spec["context"]),
        instrument=Instrument(**spec["instrument"]) if spec.get("instrument") else None,
        **spec["costs"],
    )
    policy = make_policy(
        spec["head"],
        problem,
        spec["width"],
        spec["n_layers"],
        gamma_gated=spec.get("gamma_gated", False),
    )
    state = torch.load(directory / registry.WEIGHTS_FILE, map_location="cpu", weights_only=True)
    policy.load_state_dict(state)
    return policy.eval(), spec
