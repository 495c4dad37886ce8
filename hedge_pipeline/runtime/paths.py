"""Where a run's state lives (docs/design.md §2).

Everything is derived from one data directory, ``HEDGE_DATA_DIR`` (default: the repo's
``data/``), so that pointing it elsewhere moves the warehouse, the registry, Dagster's
instance storage and the checkpoints together and two data directories never share state.
The variable is read by ``runtime.settings``.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _in_data_dir(name: str, doc: str | None = None) -> Callable[[], Path]:
    """The function returning the folder ``name`` of the data directory: one definition for
    every fixed folder below, each read afresh on every call like :func:`data_dir`."""

    def folder() -> Path:
        return data_dir() / name

    folder.__name__ = folder.__qualname__ = f"{name}_dir"
    folder.__doc__ = doc or f"The data directory's ``{name}/``."
    return folder


raw_dir = _in_data_dir("raw")
datasets_dir = _in_data_dir("datasets")
mlflow_dir = _in_data_dir("mlflow")
dagster_dir = _in_data_dir("dagster")
checkpoints_dir = _in_data_dir("checkpoints")
reports_dir = _in_data_dir(
    "reports", "Evaluation reports downloaded from the registry by ``hedge evaluate``."
)


def instance_env(base: Path | None = None) -> dict[str, str]:
    """Environment variables of a process that works on ``base`` (default: the data
    directory): the repo's ``dagster.yaml`` (``DAGSTER_HOME``), whose storage classes
    (``orchestration.instance_storage``) put Dagster's state under ``base``'s ``dagster/``,
    and ``HEDGE_DATA_DIR`` itself. ``hedge`` and the Makefile export them."""
    base = (base or data_dir()).resolve()
    return {"DAGSTER_HOME": str(REPO_ROOT), "HEDGE_DATA_DIR": str(base)}
