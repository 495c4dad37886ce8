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

Runs, event logs and schedules may instead live in Postgres (SQLite takes one writer at a time,
and its files die with the data directory): ``HEDGE_DAGSTER_POSTGRES_URL`` names the database,
and :class:`DataDirStorage` then builds Dagster's ``DagsterPostgresStorage``. It is the same
``dagster.yaml`` either way, resolved the same way in every process, so the URL is read from the
environment and never written into the instance's configuration: Dagster serializes that
configuration into the instance reference each run worker is started with and shows it in the
UI, and the URL holds a password. Artifacts and compute logs stay under the data directory.
"""

from __future__ import annotations

from typing import Any, Self

from dagster import Field, StringSource

# Dagster exports none of its storage classes publicly; these are what its own ``sqlite`` storage
# and default artifact and compute-log settings instantiate.
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import Settings

__all__ = ["DataDirArtifactStorage", "DataDirComputeLogManager", "DataDirStorage"]


def _base_dir(config_value: dict[str, Any], *below: str) -> str:
    """``base_dir`` if ``dagster.yaml`` pins one, else the data directory's ``dagster/``."""
    given = config_value.get("base_dir")
    return str(given) if given else str(paths.dagster_dir().joinpath(*below))


class _InDataDir:
    """What the three classes share: an optional ``base_dir`` in ``dagster.yaml``, else the
    data directory's ``dagster/`` (and ``below`` in it), resolved as the instance loads. Placed
    first among the bases, so that its class methods are the ones Dagster calls."""

    below: tuple[str, ...] = ()

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> Self:
        return cls(_base_dir(config_value, *cls.below), inst_data=inst_data)


class DataDirStorage(_InDataDir, DagsterStorage, ConfigurableClass):
    """Runs, event logs and schedules: in the Postgres database of ``HEDGE_DAGSTER_POSTGRES_URL``
    if it is set, else in SQLite files under the data directory's ``dagster/`` (or ``base_dir``).

    Only a factory, never instantiated: ``dagster.yaml`` names one class whatever the setting,
    and Dagster takes whatever its ``from_config_value`` returns (it checks only that the named
    class is a ``DagsterStorage``). The storage keeps this class's ``inst_data``, so the
    instance reference a run worker receives names this class again, with no URL in it, and
    the worker decides afresh from the environment it inherits.
    """

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> DagsterStorage:
        secret = Settings.from_env().dagster_postgres_url
        if secret is None:
            return DagsterSqliteStorage.from_local(_base_dir(config_value), inst_data=inst_data)
        # Imported only here: at the top, dagster_postgres (alembic, psycopg2) would add about
        # half a second to every process that loads the instance, SQLite ones included.
        from dagster_postgres import DagsterPostgresStorage

        # SQLAlchemy 2.1 reads a bare postgresql:// URL as psycopg 3's, which is not installed;
        # dagster-postgres brings psycopg2 (dagster-io/dagster#33958).
        url = secret.get_secret_value()
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        return DagsterPostgresStorage(url, inst_data=inst_data)


class DataDirArtifactStorage(_InDataDir, LocalArtifactStorage):
    """Run artifacts (and Dagster's schedule files) under the data directory's ``dagster/``."""


class DataDirComputeLogManager(_InDataDir, LocalComputeLogManager):
    """Steps' captured stdout and stderr under the data directory's ``dagster/compute_logs``."""

    below = ("compute_logs",)
