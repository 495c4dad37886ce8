"""What the meta-controller and the joint model minimize: a risk measure and three knobs.

    loss = ρ(X_gross − w_c · costs) + λ · max(VaR_α(X) − L, 0) − β · diversity

* ρ: the criterion (entropic, expected shortfall, mean–variance), on the P&L with costs
  weighted by ``cost_weight`` w_c (1: the costs as paid; above 1 a stronger push to trade less);
* the VaR limit: the loss L that a share ``var_level`` α of windows must stay within
  (the compliance rate asked); breaches of the batch's VaR are penalized with ``risk_penalty``
  λ (a soft constraint, as exact chance constraints have no useful gradient);
* ``diversification_bonus`` β rewards spreading the controller's scales over the specialists
  present (mean normalized entropy of m·s / Σ m·s, 1 when all scales are equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hedge_pipeline.quant.risk import RiskMeasure

__all__ = ["PortfolioObjective", "diversity", "value_at_risk"]


def value_at_risk(pnl: Tensor, level: float) -> Tensor:
    """The loss not exceeded in a share ``level`` of windows (a quantile of −pnl)."""
    return torch.quantile(-pnl, level)


def diversity(scales: Tensor, present: Tensor) -> Tensor:
    """Mean normalized entropy of the weights m·|s| / Σ m·|s| over windows with at least two
    codes present. Shape: scales (n, T, C), present (n, C) → ()."""
    weights = scales.abs() * present.unsqueeze(1)
    p = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(dim=-1)
    count = present.sum(dim=-1, keepdim=True)
    several = count > 1.5
    if not bool(several.any()):
        return entropy.new_zeros(())
    normalized = entropy / torch.log(count.clamp(min=2.0))
    return normalized[several.expand_as(normalized)].mean()


@dataclass(frozen=True)
class PortfolioObjective:
    """The training objective of the portfolio stages (module docstring)."""

    risk: RiskMeasure
    cost_weight: float = 1.0
    var_limit: float = math.inf
    var_level: float = 0.95
    risk_penalty: float = 0.0
    diversification_bonus: float = 0.0

    def __post_init__(self) -> None:
        if not self.cost_weight >= 0:
            raise ValueError(f"cost_weight must be >= 0, got {self.cost_weight}")
        if not 0.5 <= self.var_level < 1.0:
            raise ValueError(f"var_level must lie in [0.5, 1), got {self.var_level}")
        if not self.risk_penalty >= 0 or not self.diversification_bonus >= 0:
            raise ValueError("risk_penalty and diversification_bonus must be >= 0")

    def loss(self, pnl: Tensor, costs: Tensor, scales: Tensor, present: Tensor) -> Tensor:
        """The objective of one batch from its P&L (costs paid once), costs, scales and mask."""
        weighted = pnl - (self.cost_weight - 1.0) * costs
        loss = self.risk.loss(weighted)
        if self.risk_penalty and math.isfinite(self.var_limit):
            breach = value_at_risk(pnl, self.var_level) - self.var_limit
            loss = loss + self.risk_penalty * breach.clamp(min=0.0)
        if self.diversification_bonus:
            loss = loss - self.diversification_bonus * diversity(scales, present)
        return loss
