"""What a benchmark ran on, recorded in every ``hedge bench`` document."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from hedge_pipeline.runtime.cores import usable_cores


def machine_info(*packages: str) -> dict[str, Any]:
    """Platform, CPU model and counts, Python, and the versions of ``packages``."""
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable_cores(),
        "python": sys.version.split()[0],
        # These machines are shared: the load during a run says how far to trust its timings.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for package in packages:
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info
