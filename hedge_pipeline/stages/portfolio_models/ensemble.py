"""The ensemble: several joint models, weighted by validation risk, with a turbulence guard.

Members are joint models trained from different seeds. Each runs on its own (its band and
its specialists' positions carry their own state); the ensemble holds the weighted mean of
their positions, with weights softmax(−(risk_k − min risk) / temperature) of their validation
risk (temperature: the spread of those risks, so weights neither collapse on one member for a
negligible difference nor ignore a large one). Where the books' turbulence index exceeds a
threshold (a quantile of its training values, FinRL's guard) the ensemble holds the
Black–Scholes delta of the portfolio instead (delta-gamma, option legs included, when the
specialists trade hedge options: dropping the options in a storm would sell the gamma hedge
when it is needed most): learned policies are least trustworthy in the storms they rarely saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    PortfolioProblem,
    code_features,
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.evaluation import analytic_hedge
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes

__all__ = ["HedgeEnsemble", "member_positions", "risk_weights", "without_forecasts"]


def risk_weights(risks: Sequence[float]) -> Tensor:
    """softmax(−(r − min r) / spread), equal weights when every risk is the same."""
    r = torch.tensor(risks, dtype=torch.float64)
    spread = float(r.std()) if r.numel() > 1 else 0.0
    if not spread > 0:
        return torch.full_like(r, 1.0 / r.numel())
    return torch.softmax(-(r - r.min()) / spread, dim=0)


def member_positions(pp: PortfolioProblem, ep: PortfolioEpisodes, member: JointModel) -> Hedge:
    """One joint model's portfolio positions. Shape: → Hedge((n, T), options (n, T, C) or None)"""
    prop = proposals(pp, ep, list(member.specialists))
    return meta_rollout(pp, ep, prop, member.meta).hedge


class HedgeEnsemble(nn.Module):
    """Weighted joint models plus the turbulence guard (module docstring).

    ``turbulence_column``: the index of the turbulence index among the books' context
    columns (None: no guard).
    """

    def __init__(
        self,
        members: Sequence[JointModel],
        weights: Tensor,
        turbulence_threshold: float,
        turbulence_column: int | None,
    ) -> None:
        super().__init__()
        if len(members) != weights.numel() or not members:
            raise ValueError("an ensemble needs one weight per member, at least one member")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", weights.double())
        self.turbulence_threshold = turbulence_threshold
        self.turbulence_column = turbulence_column

    def positions(self, pp: PortfolioProblem, ep: PortfolioEpisodes) -> tuple[Hedge, Tensor]:
        """The ensemble's positions and where the guard held the analytic hedge.

        Shape: → Hedge((n, T), options (n, T, C) or None), guard (n, T)
        """
        hedges = [member_positions(pp, ep, m) for m in self.members]
        weights = self.weights.to(ep.spot.dtype)
        held = Hedge(
            *(
                None if legs[0] is None else (torch.stack(legs, dim=-1) * weights).sum(dim=-1)
                for legs in zip(*hedges, strict=True)
            )
        )
        guard = torch.zeros_like(held.underlying, dtype=torch.bool)
        if self.turbulence_column is not None:
            feats, context = code_features(pp, ep)
            guard = context[..., self.turbulence_column] > self.turbulence_threshold
            textbook = analytic_hedge(pp, ep, feats)
            held = Hedge(
                torch.where(guard, textbook.underlying, held.underlying),
                None
                if held.options is None
                else torch.where(guard.unsqueeze(-1), textbook.options, held.options),
            )
        return held, guard


def without_forecasts(
    ep: PortfolioEpisodes, columns: Sequence[int], values: Sequence[float]
) -> PortfolioEpisodes:
    """``ep`` with the books' context ``columns`` (the CNN-LSTM's forecast and uncertainty)
    held at ``values`` (their training means): the ablation of the CNN-LSTM's information."""
    books = []
    for book in ep.books:
        context = book.context.clone()
        for column, value in zip(columns, values, strict=True):
            context[..., column] = value
        books.append(book._replace(context=context))
    return ep._replace(books=tuple(books))
