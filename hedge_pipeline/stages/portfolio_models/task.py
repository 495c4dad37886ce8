"""The portfolio stages as :class:`~hedge_pipeline.harness.trainer.TrainTask`: the harness's
checkpoints, exact resume, early stopping and divergence monitor for the meta-controller
(over frozen specialists) and for the joint model (specialists trained with it).

Batches are fresh simulated portfolio windows drawn with a generator seeded from (seed, epoch,
step), deterministic given the epoch as the trainer's resume requires. Validation scores one
fixed set of validation windows with the objective itself (and reports the ES 10 % beside).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hedge_pipeline.hedging.simulator import Policy
from hedge_pipeline.quant.risk import ExpectedShortfall
from hedge_pipeline.stages.portfolio_models.controller import (
    PortfolioProblem,
    PortfolioRollout,
    meta_rollout,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes
from hedge_pipeline.stages.portfolio_models.objective import PortfolioObjective

__all__ = ["PortfolioBatch", "PortfolioTask"]

PortfolioSampler = Callable[[int, torch.Generator], PortfolioEpisodes]


class PortfolioBatch(NamedTuple):
    """Windows, and the step that draws them (alternating updates read its parity)."""

    episodes: PortfolioEpisodes
    step: Tensor


class PortfolioTask:
    """Train a :class:`MetaController` over ``frozen`` specialists, or (``frozen`` None) a
    :class:`~hedge_pipeline.stages.portfolio_models.joint.JointModel`; with ``alternate`` the joint
    model's even steps update the controller alone and odd steps the specialists alone."""

    def __init__(
        self,
        pp: PortfolioProblem,
        sampler: PortfolioSampler,
        objective: PortfolioObjective,
        validation: PortfolioEpisodes,
        steps_per_epoch: int,
        paths_per_step: int,
        seed: int = 0,
        frozen: Sequence[Policy] | None = None,
        alternate: bool = False,
        train_problem: PortfolioProblem | None = None,
    ) -> None:
        if steps_per_epoch < 1 or paths_per_step < 2:
            raise ValueError("need steps_per_epoch >= 1 and paths_per_step >= 2")
        if alternate and frozen is not None:
            raise ValueError("alternating updates need the specialists trained (the joint model)")
        self.pp, self.sampler, self.objective = pp, sampler, objective
        # Training batches may trade at other costs (a curriculum); validation never does.
        self.train_pp = train_problem or pp
        self.validation, self.frozen, self.alternate = validation, frozen, alternate
        self.steps_per_epoch, self.paths_per_step, self.seed = steps_per_epoch, paths_per_step, seed
        self._frozen_validation = None
        if frozen is not None:
            with torch.no_grad():
                self._frozen_validation = proposals(pp, validation, frozen)

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[PortfolioBatch]:
        for step in range(self.steps_per_epoch):
            state = np.random.SeedSequence([self.seed, epoch, step, rank]).generate_state(1)
            generator = torch.Generator().manual_seed(int(state[0]))
            episodes = self.sampler(self.paths_per_step, generator)
            yield PortfolioBatch(episodes, torch.tensor(step))

    def rollout(
        self,
        model: nn.Module,
        episodes: PortfolioEpisodes,
        update: str = "both",
        pp: PortfolioProblem | None = None,
    ) -> PortfolioRollout:
        """The controller's pass over ``episodes``; ``update`` names what gets gradients."""
        pp = pp or self.pp
        if self.frozen is not None:
            with torch.no_grad():
                prop = proposals(pp, episodes, self.frozen)
            return meta_rollout(pp, episodes, prop, model)
        for parameter in _unwrapped(model).meta.parameters():
            parameter.requires_grad_(update != "specialists")
        return model(pp, episodes, update)

    def loss(self, model: nn.Module, batch: PortfolioBatch, device: torch.device) -> Tensor:
        update = "both"
        if self.alternate:
            update = "meta" if int(batch.step) % 2 == 0 else "specialists"
        r = self.rollout(model, batch.episodes, update, self.train_pp)
        return self.objective.loss(r.pnl, r.costs, r.scales, batch.episodes.present)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        with torch.no_grad():
            if self._frozen_validation is not None:
                r = meta_rollout(self.pp, self.validation, self._frozen_validation, model)
            else:
                r = self.rollout(model, self.validation)
            loss = self.objective.loss(r.pnl, r.costs, r.scales, self.validation.present)
        if self.frozen is None:
            for parameter in _unwrapped(model).meta.parameters():
                parameter.requires_grad_(True)
        return {
            "val_loss": float(loss),
            "val_es10": float(ExpectedShortfall(0.1).cash(r.pnl.double())),
            "val_mean_pl": float(r.pnl.double().mean()),
            "val_total_cost": float(r.costs.double().mean()),
            "val_mean_band": float(r.bands.double().mean()),
        }


def _unwrapped(model: nn.Module) -> nn.Module:
    """The joint model itself, under ``torchrun``'s ``DistributedDataParallel`` wrapper or not."""
    return model.module if isinstance(model, DistributedDataParallel) else model
