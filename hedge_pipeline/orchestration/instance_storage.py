"""Dagster's instance storage under the data directory, wherever it is: the classes that
``dagster.yaml`` names for its storage, artifacts and compute logs.

Why classes and not paths: everything a run writes lives under ``HEDGE_DATA_DIR`` (default the
repo's ``data/``, docs/design.md §2), Dagster's runs and event logs included, so that two data
directories never share state. A path in ``dagster.yaml`` is either fixed (one data directory
for every user of the repository) or read with ``env:``, which has no default: plain
``DAGSTER_HOME=$PWD dagster dev`` (or ``dagster definitions validate``, or ``dg``) from the
repository root then failed for want of a variable only ``hedge`` and the Makefile set. These
classes resolve the directory when the instance loads, in every process that loads it (the
webserver, the daemon, each run worker, each ``hedge`` command), from the same setting as
``hedge`` (``runtime.paths.dagster_dir``): with nothing set, the repo's ``data/dagster``, the
state ``hedge ui`` and ``hedge run`` use. Each is Dagster's own SQLite/local class with the
directory filled in; ``base_dir`` may still be given in ``dagster.yaml`` to pin one.
"""

from __future__ import annotations

from typing import Any

from dagster import Field, StringSource

# Dagster exports none of its storage classes publicly; these are what its own ``sqlite`` storage
# and default artifact and compute-log settings instantiate.
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

from hedge_pipeline.runtime import paths

__all__ = ["DataDirArtifactStorage", "DataDirComputeLogManager", "DataDirSqliteStorage"]

_BASE_DIR = {"base_dir": Field(StringSource, is_required=False)}


def _base_dir(config_value: dict[str, Any], *below: str) -> str:
    """``base_dir`` if ``dagster.yaml`` pins one, else the data directory's ``dagster/``."""
    given = config_value.get("base_dir")
    return str(given) if given else str(paths.dagster_dir().joinpath(*below))


class DataDirSqliteStorage(DagsterSqliteStorage):
    """Runs, event logs and schedules in SQLite files under the data directory's ``dagster/``."""

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return dict(_BASE_DIR)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> DataDirSqliteStorage:
        return cls.from_local(_base_dir(config_value), inst_data=inst_data)


class DataDirArtifactStorage(LocalArtifactStorage):
    """Run artifacts (and Dagster's schedule files) under the data directory's ``dagster/``."""

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return dict(_BASE_DIR)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> DataDirArtifactStorage:
        return cls(_base_dir(config_value), inst_data=inst_data)


class DataDirComputeLogManager(LocalComputeLogManager):
    """Steps' captured stdout and stderr under the data directory's ``dagster/compute_logs``."""

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return dict(_BASE_DIR)

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> DataDirComputeLogManager:
        return cls(_base_dir(config_value, "compute_logs"), inst_data=inst_data)
