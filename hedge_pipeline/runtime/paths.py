"""Where a run's state lives (docs/design.md §2).

Everything is derived from one data directory, ``HEDGE_DATA_DIR`` (default: the repo's
``data/``), so that pointing it elsewhere moves the warehouse, the registry, Dagster's
instance storage and the checkpoints together and two data directories never share state.
The variable is read by ``runtime.settings``.
"""

from __future__ import annotations

from pathlib import Path

from hedge_pipeline.runtime.settings import REPO_ROOT, Settings

__all__ = [
    "REPO_ROOT",
    "checkpoints_dir",
    "dagster_dir",
    "data_dir",
    "datasets_dir",
    "instance_env",
    "mlflow_dir",
    "raw_dir",
    "reports_dir",
    "warehouse_path",
]


def data_dir() -> Path:
    """The data directory, read from the environment on every call (tests change it)."""
    return Settings.from_env().data_dir


def warehouse_path(base: Path | None = None) -> Path:
    """The DuckDB file of ``base`` (default: the data directory)."""
    return (base or data_dir()) / "warehouse.duckdb"


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
