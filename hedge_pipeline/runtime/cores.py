"""How many cores this process may use.

On Linux the affinity mask, not ``os.cpu_count()``: a container, ``taskset`` or a CI runner can
give the process fewer cores than the machine has, and sizing pools or per-code jobs by the
machine then oversubscribes them. A container is usually limited differently, though: a pod's
``resources.limits.cpu: 2`` (``docker --cpus 2``) leaves every core in the affinity mask and
sets a CFS *quota* instead (two cores' worth of time per period), so the process is
throttled, not pinned. The quota counts too, rounded up (1.5 cores: 2 workers): cgroup v2's
``cpu.max`` (``<quota> <period>`` or ``max <period>``), else cgroup v1's
``cpu.cfs_quota_us``/``cpu.cfs_period_us`` (a quota of -1 is none). Elsewhere (macOS has no
``sched_getaffinity``) every core.
"""

import math
import os
from pathlib import Path

__all__ = ["cgroup_quota", "usable_cores"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(cgroup_root: Path = CGROUP_ROOT) -> int:
    """Cores this process may run on, within its CPU quota (module docstring); at least 1."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(cores, 1)


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of the cgroup mounted at ``root``, in cores; ``None`` when unlimited or
    unreadable (no cgroup file system: not Linux, or not mounted).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "cpu.max").write_text("150000 100000\\n")
    >>> cgroup_quota(folder)
    1.5
    >>> _ = (folder / "cpu.max").write_text("max 100000\\n")
    >>> cgroup_quota(folder) is None
    True
    """
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
    except (OSError, ValueError):
        try:  # cgroup v1
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or int(period) <= 0:
        return None
    return int(quota) / int(period)
