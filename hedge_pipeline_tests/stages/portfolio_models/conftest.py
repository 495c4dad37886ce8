"""Portfolio fixtures: two books on one path set, small enough for unit tests."""

from __future__ import annotations

import torch

from hedge_pipeline.hedging.simulator import (
    Book,
    HedgingProblem,
    Instrument,
    as_episodes,
    simulate_paths,
)
from hedge_pipeline.stages.portfolio_models.controller import PortfolioProblem
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes

COST = 1e-3


def two_books(n: int = 512, present: tuple[float, float] = (1.0, 1.0), options: bool = False):
    """Two books (a call and a put) on one GBM path set, E1-style episodes; with ``options``
    each code may also trade a hedge option of its own (a put, a call)."""
    hedge = (Instrument(0.98, is_call=False), Instrument(1.03)) if options else (None, None)
    problems = (
        HedgingProblem(book=Book((1.0,), (True,), (1.0,)), cost=COST, instrument=hedge[0]),
        HedgingProblem(book=Book((1.05,), (False,), (2.0,)), cost=COST, instrument=hedge[1]),
    )
    paths = simulate_paths(problems[0], n, torch.Generator().manual_seed(0))
    episodes = PortfolioEpisodes(
        spot=paths,
        present=torch.tensor(present).expand(n, -1).clone(),
        books=tuple(as_episodes(p, paths) for p in problems),
    )
    return PortfolioProblem(("A", "B"), problems, cost=COST), episodes
