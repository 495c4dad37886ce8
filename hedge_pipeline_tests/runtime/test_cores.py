"""``runtime.cores``: the affinity mask and the cgroup CPU quota."""

import os
from pathlib import Path

import pytest

from hedge_pipeline.runtime.cores import cgroup_quota, usable_cores


def test_usable_cores_is_the_affinity_mask_where_there_is_one():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity mask on this platform")
    assert usable_cores(Path("/nonexistent")) == len(os.sched_getaffinity(0))


def test_usable_cores_counts_every_core_without_an_affinity_mask(monkeypatch):
    """macOS has no sched_getaffinity: every core, not an AttributeError and not 1."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cores(Path("/nonexistent")) == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert usable_cores(Path("/nonexistent")) == 1


def _cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def _cgroup_v1(root: Path, quota: int, period: int = 100_000) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(
    ("make", "quota"),
    [
        (lambda root: _cgroup_v2(root, "200000 100000"), 2.0),
        (lambda root: _cgroup_v2(root, "50000 100000"), 0.5),
        (lambda root: _cgroup_v2(root, "max 100000"), None),
        (lambda root: _cgroup_v1(root, 300_000), 3.0),
        (lambda root: _cgroup_v1(root, -1), None),
        (lambda root: root, None),  # no cgroup file system
    ],
)
def test_the_cgroup_quota_is_read_from_v2_or_v1(tmp_path: Path, make, quota):
    assert cgroup_quota(make(tmp_path / "cgroup")) == quota


def test_a_cpu_quota_below_the_affinity_mask_caps_the_cores_rounded_up(tmp_path: Path, monkeypatch):
    """A pod limited to 1.5 CPUs on an 8-core node: 2 workers, not 8 (nor 1)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert usable_cores(_cgroup_v2(tmp_path / "a", "150000 100000")) == 2
    assert usable_cores(_cgroup_v2(tmp_path / "b", "10000 100000")) == 1
    assert usable_cores(_cgroup_v2(tmp_path / "c", "max 100000")) == 8
    assert usable_cores(_cgroup_v2(tmp_path / "d", "1600000 100000")) == 8  # the mask caps
