"""``nightly_retrain``: one run of ``code_retrain_job`` per active weekly code.

Active codes (``orchestration.partitions.active_weekly_codes``): every partition, unless the
latest ``portfolio_selection`` was made with an ``as_of``; then the codes alive then, so a
history of ~1,000 codes costs 4-5 runs a night, not 1,000.

``build_schedule_from_partitioned_job`` refuses dynamic partitions, so the schedule lists the
partitions on each tick and yields one request per code. The run key holds the code and the
tick's scheduled time: a tick that is evaluated again (daemon restart, retried tick) asks for
the same runs and Dagster launches them once; the next night's tick asks for new ones.

Cron and timezone come from ``HEDGE_NIGHTLY_CRON`` (default ``0 2 * * *``) and
``HEDGE_NIGHTLY_TIMEZONE`` (default ``UTC``), read through ``runtime.settings`` when the code
location loads; a bad value fails the load here, naming its variable. The schedule
is STOPPED by default: a retrain of every code costs hours of CPU in the default profile, which
a laptop running ``hedge ui`` should not spend unasked. Start it in the UI (Automation) once.
"""

from __future__ import annotations

from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from hedge_pipeline.orchestration.partitions import active_set
from hedge_pipeline.runtime.settings import (
    DEFAULT_NIGHTLY_CRON,
    DEFAULT_NIGHTLY_TIMEZONE,
    Settings,
    SettingsError,
)
from hedge_pipeline.stages.automation.jobs import code_retrain_job


def _nightly_requests(
    context: dg.ScheduleEvaluationContext,
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    active = active_set(context.instance)
    codes = active.codes
    if not codes and active.as_of is None:
        yield dg.SkipReason("no weekly codes yet: new_weekly_codes_sensor or `hedge run` adds them")
        return
    if not codes:
        yield dg.SkipReason(f"no active weekly codes: none of {active.describe()} is a partition")
        return
    tick = context.scheduled_execution_time.isoformat()
    for code in codes:
        yield dg.RunRequest(
            partition_key=code, run_key=f"{code}@{tick}", tags={"hedge/trigger": "nightly"}
        )


def build_nightly_retrain(
    cron: str = DEFAULT_NIGHTLY_CRON, timezone: str = DEFAULT_NIGHTLY_TIMEZONE
) -> dg.ScheduleDefinition:
    """The schedule on ``cron`` in ``timezone``; a bad value fails the load with its variable."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"HEDGE_NIGHTLY_TIMEZONE={timezone!r} is not an IANA time zone (e.g. 'UTC', "
            "'Europe/Paris')"
        ) from None
    try:
        return _schedule(cron, timezone)
    except dg.DagsterInvalidDefinitionError:
        raise SettingsError(
            f"HEDGE_NIGHTLY_CRON={cron!r} is not a cron string (e.g. '0 2 * * *')"
        ) from None


def _schedule(cron: str, timezone: str) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="nightly_retrain",
        cron_schedule=cron,
        execution_timezone=timezone,
        job=code_retrain_job,
        execution_fn=_nightly_requests,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            "One run per active weekly code: ingest, Greeks and specialist "
            f"({cron}, {timezone}; HEDGE_NIGHTLY_CRON / HEDGE_NIGHTLY_TIMEZONE)."
        ),
    )


def nightly_retrain_from_env(settings: Settings | None = None) -> dg.ScheduleDefinition:
    settings = settings or Settings.from_env()
    return build_nightly_retrain(settings.nightly_cron, settings.nightly_timezone)
