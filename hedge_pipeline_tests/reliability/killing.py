"""A thread that SIGKILLs a Dagster step's training child at a known point of its training.

It runs beside an in-process ``dg.materialize`` (which must keep the main thread: Dagster only
handles interrupts there). Each time a new ``python -m hedge_pipeline.training`` child of this
process has checkpointed an epoch, the thread kills it with SIGKILL (no handler runs, nothing
is flushed: a preemption or the OOM killer), waits until it is dead, notes the epoch its
``last.pt`` holds and, if asked, damages that file before the step's retry can read it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hedge_pipeline.runtime import paths
from hedge_pipeline_tests.reliability.conftest import alive, last_epoch, training_children, wait_for

Damage = Callable[[Path], None]


@dataclass(frozen=True)
class Kill:
    pid: int
    epoch: int  # the epoch of last.pt once the child was dead: where a resume starts after
    checkpoint: Path


class ChildKiller(threading.Thread):
    """Kill one training child per entry of ``damages`` (None: leave its checkpoint intact)."""

    def __init__(
        self, stage: str, damages: Sequence[Damage | None], after_epoch: int = 1, timeout=240.0
    ) -> None:
        super().__init__(daemon=True, name=f"kill-{stage}")
        self.stage = stage
        self.damages = list(damages)
        self.after_epoch = after_epoch
        self.timeout = timeout
        self.kills: list[Kill] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for damage in self.damages:
                self.kills.append(self._kill_next(damage))
        except BaseException as exc:  # reported by the test through .error
            self.error = exc

    def _kill_next(self, damage: Damage | None) -> Kill:
        done = {k.pid for k in self.kills}

        def trained_child() -> int | None:
            children = [p for p in training_children(os.getpid()) if p not in done]
            if children and last_epoch(self.stage) >= self.after_epoch:
                return children[0]
            return None

        pid = wait_for(
            trained_child, self.timeout, f"a {self.stage} child past epoch {self.after_epoch}"
        )
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid), 30, f"the death of child {pid}")
        [checkpoint] = (paths.checkpoints_dir() / self.stage).glob("*/last.pt")
        epoch = last_epoch(self.stage)
        if damage is not None:
            damage(checkpoint)
        return Kill(pid, epoch, checkpoint)

    def result(self) -> list[Kill]:
        """The kills, after ``join``; raises what went wrong in the thread."""
        self.join(timeout=60)
        if self.error is not None:
            raise AssertionError(f"killing the {self.stage} child failed: {self.error}")
        return self.kills
