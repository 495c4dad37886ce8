"""How many cores this process may use.

On Linux the affinity mask, not ``os.cpu_count()``: a container, ``taskset`` or a CI runner can
give the process fewer cores than the machine has, and sizing pools or per-code jobs by the
machine then oversubscribes them. Elsewhere (macOS has no ``sched_getaffinity``) every core.
"""

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (module docstring); at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
