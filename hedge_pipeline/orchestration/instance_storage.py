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

Either way the event log storage hands a freed pool slot on to a step that queued for it in the
moment it was freed (:class:`HandsOnFreedSlots`): Dagster's own storage can leave that step
waiting forever, which with the ``duckdb_writer`` pool's one slot stops every later writer too.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Self

from dagster import Field, StringSource

# Dagster exports none of its storage classes publicly; these are what its own ``sqlite`` storage
# and default artifact and compute-log settings instantiate.
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.root import LocalArtifactStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster._utils.concurrency import ConcurrencyClaimStatus

from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import Settings

__all__ = [
    "DataDirArtifactStorage",
    "DataDirComputeLogManager",
    "DataDirStorage",
    "HandsOnFreedSlots",
]


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


class HandsOnFreedSlots(SqlEventLogStorage):
    """Dagster's SQL event log storage, with a pool slot freed while a step queued for it handed
    on to a queued step.

    Why: Dagster assigns a queued step a pool slot only when a slot is freed, and a step queues
    in two unguarded moves: it finds every slot taken, then inserts itself unassigned. When the
    last holder frees its slot between the two (a run ending as the next run's step starts),
    there is no queued step to hand the slot to, and the step inserted a moment later is never
    assigned: it logs "Step still blocked by limit for pool" every five minutes, for ever, with
    the slot free, and every later step of the pool queues behind it. Seen here: ``hedge run``
    of four codes, two runs at a time, the fourth run's ``raw_option_chains`` blocked for 35
    minutes on a free ``duckdb_writer`` slot. A blocked step asks again (after 1 s, the wait
    growing to Dagster's 15 s); so on each ask, if the pool has a slot no queued step holds,
    the longest-queued step of the highest priority (Dagster's own order) is assigned it, as a
    freed slot would have been. Two processes assigning at once may both assign; the slot rows
    stay the semaphore, so the one that does not get the slot just waits for the next free one,
    as any assigned step does.
    """

    def claim_concurrency_slot(
        self, concurrency_key: str, run_id: str, step_key: str, priority: int | None = None
    ) -> ConcurrencyClaimStatus:
        claim = super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)
        if claim.is_assigned or not self.has_unassigned_slots(concurrency_key):
            return claim
        self.assign_pending_steps([concurrency_key])
        return super().claim_concurrency_slot(concurrency_key, run_id, step_key, priority)


@cache
def _handing_on(storage_class: type[SqlEventLogStorage]) -> type[SqlEventLogStorage]:
    """``storage_class`` with :class:`HandsOnFreedSlots`' claim (one class per storage class)."""
    return type(storage_class.__name__, (HandsOnFreedSlots, storage_class), {})


def _hands_on_freed_slots(storage: DagsterStorage) -> DagsterStorage:
    """``storage`` with its event log storage made a :class:`HandsOnFreedSlots`. The class of
    the built object is swapped, not the object rebuilt: Dagster's composite storages build
    their event log storage in their constructor (Postgres's creates its tables there), and the
    subclass adds a method, no state."""
    events = storage.event_log_storage
    assert isinstance(events, SqlEventLogStorage), type(events)
    events.__class__ = _handing_on(type(events))
    return storage


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
            storage = DagsterSqliteStorage.from_local(_base_dir(config_value), inst_data=inst_data)
            return _hands_on_freed_slots(storage)
        # Imported only here: at the top, dagster_postgres (alembic, psycopg2) would add about
        # half a second to every process that loads the instance, SQLite ones included.
        from dagster_postgres import DagsterPostgresStorage

        # SQLAlchemy 2.1 reads a bare postgresql:// URL as psycopg 3's, which is not installed;
        # dagster-postgres brings psycopg2 (dagster-io/dagster#33958).
        url = secret.get_secret_value()
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        return _hands_on_freed_slots(DagsterPostgresStorage(url, inst_data=inst_data))


class DataDirArtifactStorage(_InDataDir, LocalArtifactStorage):
    """Run artifacts (and Dagster's schedule files) under the data directory's ``dagster/``."""


class DataDirComputeLogManager(_InDataDir, LocalComputeLogManager):
    """Steps' captured stdout and stderr under the data directory's ``dagster/compute_logs``."""

    below = ("compute_logs",)
