"""The one partitioning of the project: a dynamic partition per weekly option code, which of
its codes the automation (nightly schedule, sensors) works on, and how a run carries a range
of them (market data: ``BackfillPolicy.multi_run``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

weekly_code_partitions = dg.DynamicPartitionsDefinition(name="weekly_code")

# The asset whose latest materialization decides the active codes, and the metadata entries
# it records them in (hedge_pipeline/stages/selection/assets.py).
SELECTION = dg.AssetKey("portfolio_selection")
AS_OF, ACTIVE_CODES, TEMPLATE = "as_of", "active_codes", "template"


@dataclass(frozen=True)
class ActiveSet:
    """The active weekly codes (sorted) and, when a selection's ``as_of`` defines them, that
    selection's ``as_of`` and template (a run that makes the selection again must pass them,
    or it would select every code)."""

    codes: list[str]
    as_of: str | None = None
    template: str | None = None

    def describe(self) -> str:
        """Why these codes, for skip messages and logs."""
        if self.as_of is None:
            return "every weekly_code partition"
        return f"the codes alive at portfolio_selection's as_of {self.as_of}"

    def selection_run_config(self) -> dict:
        """Run config for ``portfolio_selection`` that keeps this set; empty without as_of."""
        if self.as_of is None:
            return {}
        config = {AS_OF: self.as_of} | ({TEMPLATE: self.template} if self.template else {})
        return {"ops": {SELECTION.to_user_string(): {"config": config}}}


def active_set(instance: dg.DagsterInstance, partitions: Iterable[str] | None = None) -> ActiveSet:
    """The codes the automation works on; see :func:`active_weekly_codes` for the rule.

    ``partitions``: the ``weekly_code`` partitions if the caller has listed them already (the
    new-codes sensor, with the codes it is adding), else they are listed here. One query for
    the latest selection, one for the partitions: the cost of a tick does not grow with them.
    """
    if partitions is None:
        partitions = weekly_code_partitions.get_partition_keys(dynamic_partitions_store=instance)
    keys = set(partitions)
    event = instance.get_latest_materialization_event(SELECTION)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    as_of = _as_of(metadata)
    if as_of is None:
        return ActiveSet(sorted(keys))
    selected = set(metadata[ACTIVE_CODES].value)
    template = metadata.get(TEMPLATE)
    return ActiveSet(
        sorted(keys & selected), as_of, str(template.value) if template is not None else None
    )


def _as_of(metadata: dict) -> str | None:
    """The selection's as_of as recorded (ISO), or None when it was made without one."""
    entry, codes = metadata.get(AS_OF), metadata.get(ACTIVE_CODES)
    if entry is None or codes is None or not isinstance(codes.value, list):
        return None
    try:
        datetime.fromisoformat(str(entry.value))  # "unset (every weekly code)" is not a date
    except ValueError:
        return None
    return str(entry.value)


def active_weekly_codes(instance: dg.DagsterInstance) -> list[str]:
    """The weekly codes the automation works on, sorted: what the nightly schedule retrains,
    what ``portfolio_retrain_sensor`` waits for and what ``new_weekly_codes_sensor`` launches.

    The automation follows the latest ``portfolio_selection`` materialization, because that
    table is what the specialists (their books) and the portfolio stages read:

    * made without ``as_of`` (or not made yet): every partition of ``weekly_code`` is active,
      from the moment it becomes a partition (``new_weekly_codes_sensor``, ``hedge run``)
      until someone deletes it. Expiry does not end it: an expired code's quotes are still
      training data. This is the small sources' case (synthetic, files, alpaca).
    * made with ``as_of`` (``hedge run --as-of``, or the launchpad): the active codes are the
      ones that selection found alive at its ``as_of`` (its ``active_codes`` metadata) and that
      are still partitions: 4-5 of a history's ~1,000. A code stops being active when a later
      selection leaves it out (made at a later ``as_of``: the code has expired by then, its
      last quote at or before it), when its partition is deleted, or for none of the codes
      when a selection is made without ``as_of`` again (every partition is active then).

    The set does not move forward by itself as bars arrive: re-make the selection at a later
    ``as_of`` to move it, which also gives the newly listed codes their books.
    """
    return active_set(instance).codes


def code_ranges(codes: Sequence[str], order: Sequence[str], size: int) -> list[list[str]]:
    """``codes`` cut into runs: each a range of at most ``size`` codes that are adjacent in
    ``order`` (the dynamic partitions' order, which a run's range is read in), so that a run
    never carries a code that was not asked for.

    >>> order = ["A", "B", "C", "D", "E"]
    >>> code_ranges(["E", "A", "B", "D"], order, 2)
    [['A', 'B'], ['D', 'E']]
    >>> code_ranges(["A", "B", "C"], order, 1)
    [['A'], ['B'], ['C']]
    >>> code_ranges(["A", "C", "E"], order, 50)
    [['A'], ['C'], ['E']]
    """
    position = {code: i for i, code in enumerate(order)}
    groups: list[list[str]] = []
    for code in sorted(codes, key=position.__getitem__):
        last = groups[-1] if groups else None
        if last and len(last) < size and position[code] == position[last[-1]] + 1:
            last.append(code)
        else:
            groups.append([code])
    return groups


def partition_tags(codes: Sequence[str]) -> dict[str, str]:
    """A run's partition tags: the code, or the range's first and last (as a backfill tags a
    ranged run).

    >>> partition_tags(["A"])
    {'dagster/partition': 'A'}
    >>> partition_tags(["A", "B", "C"])
    {'dagster/asset_partition_range_start': 'A', 'dagster/asset_partition_range_end': 'C'}
    """
    if len(codes) == 1:
        return {PARTITION_NAME_TAG: codes[0]}
    return {ASSET_PARTITION_RANGE_START_TAG: codes[0], ASSET_PARTITION_RANGE_END_TAG: codes[-1]}
