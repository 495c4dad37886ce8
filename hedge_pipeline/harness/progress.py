"""Training progress as a user at a terminal wants it: one line per epoch, with time left.

The trainer logs one readable summary per epoch (:func:`epoch_summary`); in a Pipes child
that line travels to the Dagster process as a log message, whatever runs the child (a
subprocess, ``torchrun``, a cluster job). :class:`ConsoleProgress` reads those messages as
they arrive (the launcher hands it every one) and prints a short line per epoch: the stage,
``epoch n/N``, the validation loss, whether it is the best so far, the time spent and at most
how long is left. "At most": early stopping may end the training sooner. Without it,
``hedge run`` is silent for minutes while a training stage runs.

The format and its parser live together here, so they cannot drift apart; this module imports
neither torch nor Dagster (the Dagster process parses, the child formats).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TextIO

__all__ = [
    "HISTORY_KEYS",
    "ConsoleProgress",
    "EpochLine",
    "duration",
    "epoch_summary",
    "is_start_message",
    "parse_epoch_summary",
    "start_message",
]

_START = "training "
_SUMMARY = re.compile(
    r"^epoch (?P<epoch>\d+)/(?P<epochs>\d+) train_loss=(?P<train>\S+) val_loss=(?P<val>\S+) "
)
HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "val_loss",
    "lr",
    "grad_norm",
    "train_val_ratio",
    "seconds",
    "samples_per_second",
)
"""The training loop's own columns of an epoch's row (``harness.trainer``'s history); the
task's metrics follow them."""


def start_message(where: str, device: str, precision: str, world_size: int, config: str) -> str:
    """The trainer's line as a fit starts, ``where`` from scratch or resuming.

    >>> start_message("from scratch", "cpu", "fp32", 1, "ab12")
    'training from scratch on cpu (fp32, 1 process), config ab12'
    """
    processes = f"{world_size} process{'es' if world_size > 1 else ''}"
    return f"{_START}{where} on {device} ({precision}, {processes}), config {config}"


def is_start_message(text: str) -> bool:
    """Whether ``text`` is a :func:`start_message`: a fit begins (a stage may run several: the
    joint model's members and curriculum phases).

    >>> is_start_message("training resuming after epoch 3 on cpu (fp32, 1 process), config x")
    True
    """
    return text.startswith(_START) and ", config " in text


def epoch_summary(row: dict[str, float], epochs: int, improved: bool) -> str:
    """The trainer's line for one epoch of at most ``epochs``.

    >>> row = {"epoch": 3, "train_loss": 0.5, "val_loss": 0.25, "lr": 1e-3, "grad_norm": 1.0,
    ...        "samples_per_second": 1000.0, "es10": 2.5}
    >>> epoch_summary(row, 20, True)
    'epoch 3/20 train_loss=0.5 val_loss=0.25 es10=2.5 lr=1.0e-03 grad_norm=1 1,000 samples/s (best)'
    """
    extra = " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in HISTORY_KEYS)
    return (
        f"epoch {row['epoch']}/{epochs} train_loss={row['train_loss']:.4g} "
        f"val_loss={row['val_loss']:.4g} {extra + ' ' if extra else ''}lr={row['lr']:.1e} "
        f"grad_norm={row['grad_norm']:.3g} {row['samples_per_second']:,.0f} samples/s"
        + (" (best)" if improved else "")
    )


class EpochLine(NamedTuple):
    """The numbers of an :func:`epoch_summary` line."""

    epoch: int
    epochs: int
    val_loss: float
    best: bool


def parse_epoch_summary(text: str) -> EpochLine | None:
    """The numbers of an :func:`epoch_summary` line; None for any other text.

    >>> tuple(parse_epoch_summary("epoch 3/20 train_loss=0.5 val_loss=0.25 lr=1.0e-03 (best)"))
    (3, 20, 0.25, True)
    >>> parse_epoch_summary("early stopping: val_loss has not improved") is None
    True
    """
    found = _SUMMARY.match(text)
    if found is None:
        return None
    best = text.rstrip().endswith("(best)")
    return EpochLine(int(found["epoch"]), int(found["epochs"]), float(found["val"]), best)


class ConsoleProgress:
    """Prints a line per epoch summary among the Pipes messages it is called with.

    ``label``: the stage (and partition) the line starts with; ``clock`` and ``stream`` are
    for tests. Time runs from the start of the current fit (:func:`is_start_message`; the
    child's start-up before it is not training), and the time left is the mean time per
    epoch of this fit so far times its epochs left. A stage that runs several fits (the joint
    model: each member, each curriculum phase) numbers them from the second on.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.clock = clock
        self.fits = 0
        self.started = clock()
        self.seen = 0
        self.best: tuple[int, float] | None = None

    def __call__(self, message: dict[str, Any]) -> None:
        if message.get("method") != "log":
            return
        text = str((message.get("params") or {}).get("message", ""))
        if is_start_message(text):
            self.fits += 1
            self.started, self.seen, self.best = self.clock(), 0, None
            return
        line = parse_epoch_summary(text)
        if line is None:
            return
        self.seen += 1
        if line.best or self.best is None:
            self.best = (line.epoch, line.val_loss)
        elapsed = self.clock() - self.started
        left = elapsed / self.seen * (line.epochs - line.epoch)
        best_epoch, best_loss = self.best
        label = self.label if self.fits < 2 else f"{self.label} [fit {self.fits}]"
        print(
            f"  {label}: epoch {line.epoch}/{line.epochs} val_loss {line.val_loss:.4g} "
            f"(best {best_loss:.4g} at {best_epoch}); {duration(elapsed)} so far, "
            f"at most {duration(left)} left",
            file=self.stream or sys.stdout,
            flush=True,
        )


def duration(seconds: float) -> str:
    """``38 s`` or ``11 min 38 s``: how ``hedge`` writes a time.

    >>> duration(38.4), duration(698.0)
    ('38 s', '11 min 38 s')
    """
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
