"""Deep hedging as a :class:`~hedge_pipeline.harness.trainer.TrainTask`: the harness's checkpoints,
exact resume, early stopping and divergence monitor for a pathwise-gradient hedger.

An epoch is ``steps_per_epoch`` optimizer steps, each on a fresh batch of simulated episodes
drawn with a generator seeded from (seed, epoch, step): deterministic given the epoch, as the
trainer's resume requires, and never the same paths twice. The loss of a batch is the risk
measure of its P&L, exactly :func:`~hedge_pipeline.hedging.deep_hedging.train_deep_hedger`'s
objective, unless an ``objective`` replaces it (the specialists':
:class:`.objective.PerStateObjective`). Validation scores the policy
on one fixed set of validation episodes, so that ``val_loss`` moves with the policy and not
with the draw; it is the same objective as training's, and the pooled risk table of the
validation P&L is reported beside it.

>>> from hedge_pipeline.hedging.deep_hedging import make_policy, sampler_of
>>> from hedge_pipeline.hedging.simulator import HedgingProblem
>>> from hedge_pipeline.quant.risk import parse_criterion
>>> problem = HedgingProblem(cost=1e-3)
>>> sampler = sampler_of(problem)
>>> task = HedgingTask(problem, sampler, parse_criterion("es:0.1"), sampler(64, None), 2, 32)
>>> len(list(task.batches(0, 0, 1)))
2
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from hedge_pipeline.hedging.deep_hedging import Sampler
from hedge_pipeline.hedging.evaluation import pnl_metrics
from hedge_pipeline.hedging.simulator import Episodes, HedgingProblem, as_episodes, rollout
from hedge_pipeline.quant.risk import RiskMeasure
from hedge_pipeline.stages.specialists.objective import PerStateObjective

__all__ = ["HedgingTask"]


class HedgingTask:
    """Fresh simulated batches for training, fixed episodes for validation (module doc).

    Under ``torchrun`` every rank draws its own batches (the seed includes the rank): DDP
    averages the gradients of ``world_size`` independent batches, as a bigger batch would.
    """

    def __init__(
        self,
        problem: HedgingProblem,
        sampler: Sampler,
        risk: RiskMeasure,
        validation: Tensor | Episodes,
        steps_per_epoch: int,
        paths_per_step: int,
        seed: int = 0,
        objective: PerStateObjective | None = None,
    ) -> None:
        if steps_per_epoch < 1 or paths_per_step < 2:
            raise ValueError(
                f"need steps_per_epoch >= 1 and paths_per_step >= 2, got {steps_per_epoch} "
                f"and {paths_per_step}"
            )
        self.problem, self.sampler, self.risk = problem, sampler, risk
        self.validation = as_episodes(problem, validation)
        self.steps_per_epoch, self.paths_per_step, self.seed = steps_per_epoch, paths_per_step, seed
        self.objective = objective

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> Iterator[Episodes]:
        for step in range(self.steps_per_epoch):
            state = np.random.SeedSequence([self.seed, epoch, step, rank]).generate_state(1)
            generator = torch.Generator().manual_seed(int(state[0]))
            yield as_episodes(self.problem, self.sampler(self.paths_per_step, generator))

    def _objective(self, pl: Tensor, episodes: Episodes) -> Tensor:
        return self.risk.loss(pl) if self.objective is None else self.objective(pl, episodes)

    def loss(self, model: nn.Module, batch: Episodes, device: torch.device) -> Tensor:
        return self._objective(rollout(self.problem, batch, model)[0], batch)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        pl = rollout(self.problem, self.validation, model)[0]
        metrics = pnl_metrics(pl, self.risk)
        if self.objective is None:
            loss = metrics.pop("price")
        else:  # the pooled price stays in the table as val_price
            loss = float(self.objective(pl, self.validation))
        return {"val_loss": loss} | {f"val_{k}": v for k, v in metrics.items()}
