"""``portfolio_retrain_sensor``: fires once per specialist generation, never on a partial one.

Materializations are reported straight into a real instance (as the Pipes children's reports
land in the event log), so these tests do not need the portfolio assets to exist.
"""

from __future__ import annotations

import dagster as dg

from hedge_pipeline_tests.stages.automation.events import (
    portfolio_tick,
    report_ensemble,
    report_specialists,
)

CODES = ["3CN5", "3IN5", "3MN5"]


def _run_keys(result: dg.SensorResult) -> list[str]:
    return [r.run_key for r in result.run_requests or []]


def test_no_codes_and_missing_specialists_skip_with_the_reason(instance):
    assert "no weekly codes" in portfolio_tick(instance).skip_reason.skip_message
    instance.add_dynamic_partitions("weekly_code", CODES)
    report_specialists(instance, "3CN5")
    result = portfolio_tick(instance)
    assert not result.run_requests
    assert "2/3 codes" in result.skip_reason.skip_message
    assert "3IN5, 3MN5" in result.skip_reason.skip_message


def test_fires_once_per_generation_and_only_when_every_code_is_newer_than_the_ensemble(instance):
    instance.add_dynamic_partitions("weekly_code", CODES)
    report_specialists(instance, *CODES)

    first = portfolio_tick(instance)
    [key] = _run_keys(first)
    assert first.run_requests[0].tags["hedge/trigger"] == "specialists_updated"
    # Idempotent: the same generation always gives the same run key (Dagster launches a run key
    # once), and with the cursor the sensor does not even ask again.
    assert _run_keys(portfolio_tick(instance)) == [key]
    again = portfolio_tick(instance, first.cursor)
    assert _run_keys(again) == []
    assert "already requested" in again.skip_reason.skip_message

    report_ensemble(instance)
    assert _run_keys(portfolio_tick(instance, first.cursor)) == []
    # One code retrained is not a generation; every code retrained is.
    report_specialists(instance, "3IN5")
    partial = portfolio_tick(instance, first.cursor)
    assert _run_keys(partial) == []
    assert "3CN5, 3MN5" in partial.skip_reason.skip_message
    report_specialists(instance, "3CN5", "3MN5")
    [second] = _run_keys(portfolio_tick(instance, first.cursor))
    assert second != key


def test_a_new_code_without_a_specialist_holds_the_generation_back(instance):
    instance.add_dynamic_partitions("weekly_code", CODES)
    report_specialists(instance, *CODES)
    report_ensemble(instance)
    report_specialists(instance, *CODES)
    instance.add_dynamic_partitions("weekly_code", ["3WN5"])
    result = portfolio_tick(instance)
    assert _run_keys(result) == []
    assert "3WN5" in result.skip_reason.skip_message
    report_specialists(instance, "3WN5")
    assert len(_run_keys(portfolio_tick(instance))) == 1


def test_a_code_that_joined_since_the_ensemble_makes_a_generation_due(instance):
    """A new code's first specialist is enough once every code has one: the others' older
    specialists are kept. Retraining a code the ensemble already covers is not."""
    instance.add_dynamic_partitions("weekly_code", CODES)
    report_specialists(instance, *CODES)
    report_ensemble(instance)
    report_specialists(instance, "3IN5")
    assert _run_keys(portfolio_tick(instance)) == []
    instance.add_dynamic_partitions("weekly_code", ["3WN5"])
    assert _run_keys(portfolio_tick(instance)) == []  # no specialist for it yet
    report_specialists(instance, "3WN5")
    [key] = _run_keys(joined := portfolio_tick(instance))
    assert joined.cursor == key
    report_ensemble(instance)
    report_specialists(instance, "3WN5")  # covered by the ensemble now: a retrain, not a join
    assert _run_keys(portfolio_tick(instance, joined.cursor)) == []


def test_a_specialist_of_a_deleted_code_does_not_count(instance):
    instance.add_dynamic_partitions("weekly_code", CODES)
    report_specialists(instance, *CODES)
    report_ensemble(instance)
    report_specialists(instance, "3CN5", "3IN5")
    assert _run_keys(portfolio_tick(instance)) == []
    instance.delete_dynamic_partition("weekly_code", "3MN5")
    assert len(_run_keys(portfolio_tick(instance))) == 1


def test_the_code_location_runs_the_sensor_on_the_portfolio_stages(data_dir):
    from hedge_pipeline.definitions import defs

    sensor = defs.resolve_sensor_def("portfolio_retrain_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def(sensor.job_name)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "meta_controller",
        "joint_model",
        "hedge_ensemble",
    }
