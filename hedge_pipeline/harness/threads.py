"""Torch's intra-op thread count for the length of a block.

On 2 shared cores, contended OpenMP threads spin-wait: trainers and benchmarks pin the count
for their run and must give the caller's setting back however they exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads (``None``: leave them as they are)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
