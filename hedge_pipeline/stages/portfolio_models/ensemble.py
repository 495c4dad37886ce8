"""The ensemble: several joint models, weighted by validation risk, with a turbulence guard.

Members are joint models trained from different seeds, each on its own block bootstrap of the
training windows (:func:`.train_joint.member_portfolio`). Each runs on its own (its band and
its specialists' positions carry their own state); the ensemble holds the weighted mean of
their positions, with weights softmax(−(risk_k − min risk) / temperature) of their validation
risk (temperature: the spread of those risks, so weights neither collapse on one member for a
negligible difference nor ignore a large one). Where the books' turbulence index exceeds a
threshold (a quantile of its training values, FinRL's guard) the ensemble holds the
Black–Scholes delta of the portfolio in the underlying instead: learned policies are least
trustworthy in the storms they rarely saw. When the specialists trade hedge options the guard
keeps the members' option positions and swaps only the underlying, to the books' delta net of
those options (:func:`guarded`): the options are each code's own hedge, already netted of
nothing, and replacing them by the analytic delta-gamma legs in every storm would trade every
option's spread twice (out and back in) for a position the members had already chosen.
The guard is a bet that the members are worse than the analytic hedge in those storms; the
stage keeps it only where the validation windows do not say it loses
(:class:`.train_ensemble.EnsembleModel`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hedge_pipeline.quant.risk import ExpectedShortfall
from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    PortfolioProblem,
    code_features,
    meta_rollout,
    net_of_options,
    portfolio_pnl,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.evaluation import portfolio_delta
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes

__all__ = [
    "HedgeEnsemble",
    "ensemble_es10",
    "guard_if_it_helps",
    "guarded",
    "member_positions",
    "risk_weights",
    "without_forecasts",
]


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
            _, context = code_features(pp, ep)
            guard = context[..., self.turbulence_column] > self.turbulence_threshold
            held = guarded(pp, ep, held, guard)
        return held, guard


def guarded(pp: PortfolioProblem, ep: PortfolioEpisodes, held: Hedge, guard: Tensor) -> Hedge:
    """``held`` with its underlying set to the books' Black–Scholes delta net of ``held``'s
    own option positions wherever ``guard`` is set; the options are kept (module docstring).
    Without hedge options that is the portfolio's BS delta.

    Shape: held Hedge((n, T), (n, T, C) or None), guard (n, T) bool → Hedge like ``held``

    >>> from hedge_pipeline.hedging.simulator import (
    ...     Book, HedgingProblem, Instrument, as_episodes, simulate_paths)
    >>> problem = HedgingProblem(book=Book((1.0,), (True,), (1.0,)), instrument=Instrument(1.03))
    >>> paths = simulate_paths(problem, 4, torch.Generator().manual_seed(0))
    >>> ep = PortfolioEpisodes(paths, torch.ones(4, 1), (as_episodes(problem, paths),))
    >>> pp = PortfolioProblem(("A",), (problem,))
    >>> held = Hedge(torch.zeros(4, pp.n_steps), torch.ones(4, pp.n_steps, 1))
    >>> storm = guarded(pp, ep, held, torch.ones(4, pp.n_steps, dtype=torch.bool))
    >>> torch.equal(storm.options, held.options)  # the members' options are kept
    True
    >>> bool((storm.underlying < 1.0).all())  # the call's delta less the other call's
    True
    >>> calm = guarded(pp, ep, held, torch.zeros(4, pp.n_steps, dtype=torch.bool))
    >>> torch.equal(calm.underlying, held.underlying)
    True
    """
    feats, _ = code_features(pp, ep)
    textbook = portfolio_delta(ep, net_of_options(feats, held.options))
    return Hedge(torch.where(guard, textbook, held.underlying), held.options)


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


def ensemble_es10(pp: PortfolioProblem, ep: PortfolioEpisodes, ensemble: HedgeEnsemble) -> float:
    """The ensemble's ES10 on windows ``ep``, as the reports and the promotion gate score."""
    with torch.no_grad():
        pnl, _ = portfolio_pnl(pp, ep, ensemble.positions(pp, ep)[0])
    return float(ExpectedShortfall(0.1).cash(pnl.double()))


def guard_if_it_helps(
    pp: PortfolioProblem,
    validation: PortfolioEpisodes,
    members: Sequence[JointModel],
    weights: Tensor,
    turbulence_threshold: float,
    turbulence_column: int,
) -> tuple[HedgeEnsemble, dict[str, float]]:
    """The ensemble with its turbulence guard, or without it if the guard raises its ES10 on
    the ``validation`` windows; and both ES10s (``guard``, ``no_guard``).

    The guard bets that the members are worse than the analytic hedge in turbulence they
    rarely saw. Measured in the default world it lost that bet on the validation and test
    windows alike (benchmarks/stages.md §7), so it is kept only where the validation windows
    do not say it loses; a tie (it never fires on them) keeps it.
    """
    candidates = {
        "guard": HedgeEnsemble(members, weights, turbulence_threshold, turbulence_column),
        "no_guard": HedgeEnsemble(members, weights, turbulence_threshold, None),
    }
    es10 = {name: ensemble_es10(pp, validation, e) for name, e in candidates.items()}
    return candidates["guard" if es10["guard"] <= es10["no_guard"] else "no_guard"], es10
