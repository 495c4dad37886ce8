"""Watches a training run for the failures a quant would otherwise find too late.

Hard failure: a NaN or infinite loss or gradient norm raises :class:`TrainingDiverged` at
once, before the optimizer applies the step, so the weights on disk stay those of the last good
epoch and the stage registers nothing.

Soft failures go to ``reporter.warning``, once per episode (a condition warns when it starts
and re-arms when it clears, so a long plateau is one line, not one per epoch):

- divergence: val_loss above 3× the best so far (when losses are positive), or rising for
  3 consecutive epochs;
- plateau: no improvement for ``max(2, patience // 2)`` epochs, a hint that early stopping is
  coming or the learning rate is off;
- GPU memory: more than 90 % of the device reserved by PyTorch's caching allocator, the usual
  prelude to an out-of-memory crash on a larger batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

DIVERGENCE_FACTOR = 3.0
RISING_EPOCHS = 3
MEMORY_FRACTION = 0.9


class TrainingDiverged(RuntimeError):
    """NaN/inf loss or gradients: the run is unusable and nothing may be registered."""


class _Warner(Protocol):
    def warning(self, message: str) -> None: ...


class TrainingMonitor:
    """Checks of one run; its state (the active warnings) is saved in checkpoints.

    Args:
        reporter: receives the warnings.
        patience: the early-stopping patience; the plateau warning fires at half of it.
        device: the training device (memory is checked on CUDA only).
        tolerate_inf_grads: with fp16 and a GradScaler, overflowing gradients are expected:
            the scaler skips that step and lowers its scale, so they are not divergence.
    """

    def __init__(
        self, reporter: _Warner, patience: int, device: torch.device, tolerate_inf_grads: bool
    ) -> None:
        self.reporter = reporter
        self.plateau_epochs = max(2, patience // 2)
        self.device = device
        self.tolerate_inf_grads = tolerate_inf_grads
        self.active: set[str] = set()

    def check_step(
        self, losses: Sequence[tuple[int, float]], grad_norm: float, epoch: int, lr: float
    ) -> None:
        """Raise on a non-finite loss or gradient norm.

        Args:
            losses: ``(batch number, loss)`` of the micro-batches of this optimizer step.
            grad_norm: the global gradient norm before clipping.
        """
        for batch, loss in losses:
            if not math.isfinite(loss):
                raise _diverged(f"loss is {loss}", epoch, batch, lr)
        if not math.isfinite(grad_norm) and not self.tolerate_inf_grads:
            raise _diverged(f"gradient norm is {grad_norm}", epoch, losses[-1][0], lr)

    def check_epoch(self, history: Sequence[dict[str, float]], stale_epochs: int) -> None:
        """Raise on a non-finite val_loss; warn on divergence and plateaus.

        Args:
            history: every epoch so far, the one just finished last.
            stale_epochs: epochs since val_loss last improved by more than min_delta.
        """
        row = history[-1]
        epoch, val_loss = int(row["epoch"]), row["val_loss"]
        if not math.isfinite(val_loss):
            raise TrainingDiverged(
                f"training diverged: val_loss is {val_loss} at epoch {epoch} "
                f"(lr {row['lr']:.0e}); nothing was registered"
            )
        previous = [r["val_loss"] for r in history[:-1]]
        best = min(previous, default=math.inf)
        recent = [r["val_loss"] for r in history[-RISING_EPOCHS - 1 :]]
        self._episode(
            "jump",
            0 < best < math.inf and val_loss > DIVERGENCE_FACTOR * best,
            f"val_loss {val_loss:.4g} at epoch {epoch} is more than {DIVERGENCE_FACTOR:g}× the "
            f"best so far ({best:.4g}): training may be diverging (learning rate too high?)",
        )
        self._episode(
            "rising",
            len(recent) == RISING_EPOCHS + 1 and all(a < b for a, b in itertools.pairwise(recent)),
            f"val_loss has risen for {RISING_EPOCHS} consecutive epochs "
            f"({' → '.join(f'{v:.4g}' for v in recent)}, epoch {epoch}): training may be "
            "diverging or overfitting",
        )
        self._episode(
            "plateau",
            stale_epochs >= self.plateau_epochs,
            f"epoch {epoch}: val_loss has not improved for {stale_epochs} epochs (best "
            f"{best:.4g} at epoch {epoch - stale_epochs}): the run is on a plateau",
        )

    def check_memory(self) -> None:
        """Warn when PyTorch holds more than 90 % of the GPU's memory (CUDA devices only)."""
        if self.device.type != "cuda":
            return
        total = torch.cuda.get_device_properties(self.device).total_memory
        reserved = torch.cuda.memory_reserved(self.device)
        self._episode(
            "gpu_memory",
            reserved > MEMORY_FRACTION * total,
            f"GPU memory on {self.device}: {reserved / total:.0%} reserved "
            f"({reserved / 2**30:.1f} of {total / 2**30:.1f} GiB); a larger batch or model "
            "will run out of memory",
        )

    def state_dict(self) -> dict[str, Any]:
        return {"active": sorted(self.active)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.active = set(state["active"])

    def _episode(self, name: str, condition: bool, message: str) -> None:
        """Warn when ``condition`` starts; re-arm when it ends."""
        if condition and name not in self.active:
            self.reporter.warning(message)
        if condition:
            self.active.add(name)
        else:
            self.active.discard(name)


def _diverged(what: str, epoch: int, batch: int, lr: float) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged: {what} at epoch {epoch}, batch {batch} (lr {lr:.0e}); "
        "nothing was registered"
    )
