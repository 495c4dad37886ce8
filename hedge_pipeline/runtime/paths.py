"""Where a run's state lives (docs/design.md §2).

Everything is derived from one data directory, ``HEDGE_DATA_DIR`` (default: the repo's
``data/``), so that pointing it elsewhere moves the warehouse, the registry, Dagster's
instance storage and the checkpoints together and two data directories never share state.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The data directory, read from the environment on every call (tests change it)."""
    return Path(os.environ.get("HEDGE_DATA_DIR", REPO_ROOT / "data")).resolve()


def warehouse_path() -> Path:
    return data_dir() / "warehouse.duckdb"


def raw_dir() -> Path:
    return data_dir() / "raw"


def datasets_dir() -> Path:
    return data_dir() / "datasets"


def mlflow_dir() -> Path:
    return data_dir() / "mlflow"


def dagster_dir() -> Path:
    return data_dir() / "dagster"


def checkpoints_dir() -> Path:
    return data_dir() / "checkpoints"


def reports_dir() -> Path:
    """Evaluation reports downloaded from the registry by ``hedge evaluate``."""
    return data_dir() / "reports"


def instance_env(base: Path | None = None) -> dict[str, str]:
    """Environment variables that make ``dagster.yaml`` store everything under ``base``.

    ``dagster.yaml`` reads its paths from these; ``hedge`` and the Makefile export them.
    """
    base = (base or data_dir()).resolve()
    return {
        "DAGSTER_HOME": str(REPO_ROOT),
        "HEDGE_DATA_DIR": str(base),
        "HEDGE_DAGSTER_DIR": str(base / "dagster"),
        "HEDGE_DAGSTER_COMPUTE_LOGS_DIR": str(base / "dagster" / "compute_logs"),
    }
