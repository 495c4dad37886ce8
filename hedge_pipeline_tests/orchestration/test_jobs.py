"""Every named job of the code location runs its chain of steps in the run worker's process."""

from __future__ import annotations

import dagster as dg

from hedge_pipeline.definitions import defs


def test_named_jobs_run_in_process_and_the_asset_job_keeps_dagsters_default():
    repository = defs.get_repository_def()
    named = [job.name for job in repository.get_all_jobs() if not job.name.startswith("__")]
    assert {"market_data_job", "new_code_job", "specialists_job", "portfolio_training_job",
            "code_retrain_job"} <= set(named)  # fmt: skip
    for name in named:
        assert defs.resolve_job_def(name).executor_def is dg.in_process_executor, name
    # UI materializations and backfills may select assets that could run side by side.
    implicit = defs.resolve_implicit_global_asset_job_def()
    assert implicit.executor_def is not dg.in_process_executor
