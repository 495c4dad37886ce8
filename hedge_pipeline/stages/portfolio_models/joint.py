"""The joint model: the meta-controller and its specialists, trained together.

The meta-controller stage trains the controller over frozen specialists. The joint stage
unfreezes them: the portfolio's loss flows through the controller into every specialist's
hedge (pathwise, through the simulator), so a specialist can learn what its book's hedge is
worth *in the portfolio* (where part of it nets against the others) rather than alone. It
keeps the two parts apart where that matters (``harness.trainer``'s component options):

* separate learning rates and gradient clipping per component, so a large gradient of one
  part does not shrink the other's step. Both parts start trained, so both rates are small:
  the controller's (``joint_learning_rate``) is a tenth of the meta-controller stage's, which
  stopped at its best validation epoch; at that stage's own rate an epoch moved the
  controller off its optimum and no epoch of any phase beat the starting point;
* optional alternating updates: even steps move the controller, odd steps the specialists;
* a curriculum of phases over cost and volatility regimes (:data:`CURRICULUM`), each resumed
  from its checkpoints and skipped once complete, every phase validated on the same real
  validation windows at the real costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hedge_pipeline.stages.portfolio_models.controller import (
    MetaController,
    PortfolioProblem,
    PortfolioRollout,
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes

__all__ = ["CURRICULUM", "JointModel", "Phase"]


@dataclass(frozen=True)
class Phase:
    """One stage of the curriculum: costs × ``cost_scale``; each window's start vol × a
    factor drawn from ``vol_scale`` (low, high)."""

    name: str
    cost_scale: float
    vol_scale: tuple[float, float]


CURRICULUM = (
    Phase("half_cost", 0.5, (1.0, 1.0)),
    Phase("full_cost", 1.0, (1.0, 1.0)),
    Phase("vol_regimes", 1.0, (0.7, 1.4)),
)


class JointModel(nn.Module):
    """``meta`` and ``specialists`` (one per code, in the portfolio's code order) as one
    module: its top-level children are the components the trainer's options name.

    Its ``forward`` is the whole joint rollout, so that under ``torchrun`` the training pass goes
    through the ``DistributedDataParallel`` wrapper (which syncs the gradients of both parts)
    rather than around it through the children.
    """

    def __init__(self, meta: MetaController, specialists: Sequence[nn.Module]) -> None:
        super().__init__()
        self.meta = meta
        self.specialists = nn.ModuleList(specialists)

    def forward(
        self, pp: PortfolioProblem, episodes: PortfolioEpisodes, update: str = "both"
    ) -> PortfolioRollout:
        """The controller's pass over ``episodes`` from the specialists' proposals; with
        ``update="meta"`` the proposals carry no gradient (the specialists hold still)."""
        if update == "meta":
            with torch.no_grad():
                prop = proposals(pp, episodes, list(self.specialists))
        else:
            prop = proposals(pp, episodes, list(self.specialists))
        return meta_rollout(pp, episodes, prop, self.meta)
