"""``nightly_retrain``: what one tick asks for, and how cron and timezone are configured."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from hedge_pipeline.stages.automation.jobs import CODE_RETRAIN_ASSETS
from hedge_pipeline.stages.automation.schedules import (
    build_nightly_retrain,
    nightly_retrain_from_env,
)

CODES = ["3CN5", "3IN5", "SPY-2026-11-27"]
NIGHT = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def _tick(instance: dg.DagsterInstance, when: datetime = NIGHT) -> dg.ScheduleExecutionData:
    """One evaluation of the schedule as the code location defines it (the run requests name
    partitions, so Dagster checks them against the job in the repository)."""
    from hedge_pipeline.definitions import defs

    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    return defs.resolve_schedule_def("nightly_retrain").evaluate_tick(context)


def test_one_run_request_per_active_code(instance):
    instance.add_dynamic_partitions("weekly_code", CODES)
    result = _tick(instance)
    assert sorted(r.partition_key for r in result.run_requests) == sorted(CODES)
    assert all(r.tags["hedge/trigger"] == "nightly" for r in result.run_requests)
    assert len({r.run_key for r in result.run_requests}) == len(CODES)


def test_a_tick_evaluated_twice_asks_for_the_same_runs_and_the_next_night_for_new_ones(instance):
    instance.add_dynamic_partitions("weekly_code", CODES)
    first = {r.run_key for r in _tick(instance).run_requests}
    assert {r.run_key for r in _tick(instance).run_requests} == first
    next_night = {r.run_key for r in _tick(instance, NIGHT.replace(day=24)).run_requests}
    assert next_night.isdisjoint(first)


def test_a_deleted_code_is_no_longer_retrained(instance):
    instance.add_dynamic_partitions("weekly_code", CODES)
    instance.delete_dynamic_partition("weekly_code", "3IN5")
    assert sorted(r.partition_key for r in _tick(instance).run_requests) == [
        "3CN5",
        "SPY-2026-11-27",
    ]


def test_no_codes_is_a_skip_that_says_why(instance):
    result = _tick(instance)
    assert not result.run_requests
    assert "no weekly codes" in result.skip_message


def test_defaults_are_two_am_utc_and_stopped(monkeypatch):
    monkeypatch.delenv("HEDGE_NIGHTLY_CRON", raising=False)
    monkeypatch.delenv("HEDGE_NIGHTLY_TIMEZONE", raising=False)
    schedule = nightly_retrain_from_env()
    assert schedule.name == "nightly_retrain"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "code_retrain_job"


def test_cron_and_timezone_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HEDGE_NIGHTLY_CRON", "30 23 * * 1-5")
    monkeypatch.setenv("HEDGE_NIGHTLY_TIMEZONE", "America/Chicago")
    schedule = nightly_retrain_from_env()
    assert schedule.cron_schedule == "30 23 * * 1-5"
    assert schedule.execution_timezone == "America/Chicago"


@pytest.mark.parametrize(
    ("cron", "timezone", "variable"),
    [("0 25 * * *", "UTC", "HEDGE_NIGHTLY_CRON"), ("0 2 * * *", "Mars/Base", "TIMEZONE")],
)
def test_a_bad_cron_or_timezone_fails_the_load_naming_the_variable(cron, timezone, variable):
    with pytest.raises(ValueError, match=variable):
        build_nightly_retrain(cron, timezone)


def test_the_code_location_runs_ingest_greeks_and_specialist_per_code(data_dir):
    from hedge_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def("nightly_retrain")
    job = defs.resolve_job_def(schedule.job_name)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(
        CODE_RETRAIN_ASSETS
    )
    assert job.partitions_def.name == "weekly_code"
