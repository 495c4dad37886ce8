"""The portfolio's risk table: every hedger, every stage, on the same windows.

Baselines trade the netted portfolio position: no hedge, Black–Scholes delta (the sum of the
books' deltas) and a Whalley–Wilmott band around it, sized by the portfolio's dollar gamma.
The columns (:func:`portfolio_metrics`), per window of P&L X (the hedged portfolio, held from
the window's first decision to its end):

* ``price``: the criterion's cash value of X; ``es10``: expected shortfall at 10 %;
  ``entropic``: the entropic price with risk aversion 1;
* ``sharpe``: mean/std of X; ``sortino``: mean / downside deviation (root mean of min(X,0)²);
  both per window, not annualized (windows overlap in replay);
* ``max_drawdown``: the mean over windows of the largest peak-to-trough fall of the marked
  P&L path (:func:`~hedge_pipeline.ml.portfolio.controller.mark_to_market`); ``calmar``:
  mean P&L / max_drawdown;
* ``win_rate``: share of windows where the hedger ends above Black–Scholes delta on the same
  window; ``profit_rate``: share with X > 0;
* ``var_compliance``: share of windows whose loss stays within the VaR limit;
* ``total_cost``: mean transaction cost per window.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from hedge_pipeline.ml.hedging.baselines import whalley_wilmott_width
from hedge_pipeline.ml.hedging.simulator import DELTA, SCALED_GAMMA
from hedge_pipeline.ml.portfolio.controller import (
    PortfolioProblem,
    code_features,
    mark_to_market,
    portfolio_pnl,
)
from hedge_pipeline.ml.portfolio.market import PortfolioEpisodes
from hedge_pipeline.quant.risk import EntropicRisk, ExpectedShortfall, RiskMeasure

__all__ = ["BASELINES", "baseline_positions", "portfolio_delta", "portfolio_metrics", "score"]

BASELINES = ("no_hedge", "bs_delta", "whalley_wilmott")
REFERENCE = "bs_delta"


def portfolio_delta(pp: PortfolioProblem, ep: PortfolioEpisodes) -> Tensor:
    """Σ of the present books' Black–Scholes deltas. Shape: → (n_paths, n_steps)."""
    feats, _ = code_features(pp, ep)
    return (feats[..., DELTA] * ep.present.unsqueeze(1)).sum(dim=-1)


def baseline_positions(
    pp: PortfolioProblem, ep: PortfolioEpisodes, risk_aversion: float = 1.0
) -> dict[str, Tensor]:
    """Positions (n, T) of the three baselines on ``ep`` (module docstring)."""
    feats, _ = code_features(pp, ep)
    present = ep.present.unsqueeze(1)
    delta = (feats[..., DELTA] * present).sum(dim=-1)
    sigma = torch.tensor([p.sigma for p in pp.problems], dtype=ep.spot.dtype)
    tau = torch.stack([b.tau[:, :-1] for b in ep.books], dim=-1).clamp(min=1e-12)
    # S·Γ of each book from its scaled gamma S·Γ·σ·√τ; the portfolio's is their sum.
    spot_gamma = (feats[..., SCALED_GAMMA] / (sigma * tau.sqrt()) * present).sum(dim=-1)
    width = whalley_wilmott_width(pp.cost, ep.spot[:, :-1], spot_gamma, risk_aversion)
    band, prev = [], torch.zeros_like(delta[:, 0])
    for t in range(pp.n_steps):
        prev = torch.clamp(prev, delta[:, t] - width[:, t], delta[:, t] + width[:, t])
        band.append(prev)
    return {
        "no_hedge": torch.zeros_like(delta),
        "bs_delta": delta,
        "whalley_wilmott": torch.stack(band, dim=1),
    }


def portfolio_metrics(
    path: Tensor,
    costs: Tensor,
    risk: RiskMeasure,
    var_limit: float,
    reference: Tensor,
) -> dict[str, float]:
    """The columns of the module docstring from a marked P&L path (n, T + 1), the costs (n,)
    and the reference hedger's P&L (n,), in float64."""
    path, costs, reference = path.double(), costs.double(), reference.double()
    pl = path[:, -1]
    mean, std = float(pl.mean()), float(pl.std()) if pl.numel() > 1 else 0.0
    downside = float(pl.clamp(max=0.0).square().mean().sqrt())
    drawdown = float((path.cummax(dim=1).values - path).max(dim=1).values.mean())
    return {
        "price": float(risk.cash(pl)),
        "mean_pl": mean,
        "std_pl": std,
        "es10": float(ExpectedShortfall(0.1).cash(pl)),
        "entropic": float(EntropicRisk(1.0).cash(pl)),
        "sharpe": mean / std if std > 0 else float("nan"),
        "sortino": mean / downside if downside > 0 else float("nan"),
        "max_drawdown": drawdown,
        "calmar": mean / drawdown if drawdown > 0 else float("nan"),
        "win_rate": float((pl > reference).double().mean()),
        "profit_rate": float((pl > 0).double().mean()),
        "var_compliance": float((-pl <= var_limit).double().mean()),
        "total_cost": float(costs.mean()),
    }


def score(
    pp: PortfolioProblem,
    ep: PortfolioEpisodes,
    positions: Mapping[str, Tensor],
    risk: RiskMeasure,
    var_limit: float,
) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Metrics and P&L per hedger, from each hedger's positions: (n, T) netted, or (n, T, C)
    each code trading for itself. ``positions`` must hold ``bs_delta`` (the win-rate reference)."""
    with torch.no_grad():
        scored = {name: portfolio_pnl(pp, ep, held) for name, held in positions.items()}
        reference = scored[REFERENCE][0]
        metrics = {
            name: portfolio_metrics(mark_to_market(pp, ep, held), scored[name][1], risk,
                                    var_limit, reference)
            for name, held in positions.items()
        }  # fmt: skip
    return metrics, {name: pnl for name, (pnl, _) in scored.items()}
