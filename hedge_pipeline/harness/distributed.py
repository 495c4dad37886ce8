"""Data-parallel set-up under ``torchrun``, and the few collectives the trainer needs.

``torchrun`` (or ``python -m torch.distributed.run``) starts one process per device and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (plus the rendezvous address). Without those
variables, or with ``WORLD_SIZE=1``, everything here is a no-op and the collectives return
their input, so the trainer has a single code path for one process and for many.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (defaults: a single process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone evaluates, writes checkpoints and reports."""
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the ``torchrun`` process group; idempotent, and a no-op for a single process.

    The backend is gloo for CPU tensors and, when CUDA is present, NCCL for CUDA tensors
    (``"cpu:gloo,cuda:nccl"``), so a run that trains on the CPU of a GPU machine still works.
    On CUDA the process binds to ``cuda:LOCAL_RANK`` first, as NCCL requires.
    """
    if launched_world_size() <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        backend=str(dist.get_backend()),
    )


def launched_world_size() -> int:
    """How many processes ``torchrun`` started for this job (1 without it), whether or not the
    stage joined a process group: what a run records to say how it was trained."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def shutdown_distributed() -> None:
    """Leave the process group (if any); call once, when the stage is done with collectives."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed() -> Iterator[DistInfo]:
    """``init_distributed`` on entry, ``shutdown_distributed`` on exit (for stage entry points)."""
    info = init_distributed()
    try:
        yield info
    finally:
        shutdown_distributed()


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``: CUDA if available, else CPU. ``cuda`` without an index: ``cuda:LOCAL_RANK``.

    Raises:
        RuntimeError: a CUDA device is asked for on a machine without CUDA.
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} was asked for, but CUDA is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. a signal reached one process)."""
    if not _active():
        return flag
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64, so sample counts stay exact)."""
    if not _active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; small ones, e.g. metrics)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank, on every rank."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if _active():
        dist.barrier()


def is_main_process() -> bool:
    """Rank 0, or a process outside any process group: the one that writes shared files
    (two ranks writing the same checkpoint race on its temporary file)."""
    return not _active() or dist.get_rank() == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
