import os

import pytest

from hedge_pipeline.runtime.cores import usable_cores


def test_usable_cores_is_the_affinity_mask_where_there_is_one():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity mask on this platform")
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_usable_cores_counts_every_core_without_an_affinity_mask(monkeypatch):
    """macOS has no sched_getaffinity: every core, not an AttributeError and not 1."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert usable_cores() == 1
