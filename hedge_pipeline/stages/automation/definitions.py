"""The automation area's ``Definitions``: the nightly schedule, its job, the portfolio sensor.

``portfolio_retrain_sensor`` targets ``portfolio_training_job`` by name; the job belongs to the
models area, and ``Definitions.merge`` in ``hedge_pipeline/definitions.py`` joins the two.
"""

import dagster as dg

from hedge_pipeline.stages.automation.jobs import code_retrain_job
from hedge_pipeline.stages.automation.schedules import nightly_retrain_from_env
from hedge_pipeline.stages.automation.sensors import portfolio_retrain_sensor

defs = dg.Definitions(
    jobs=[code_retrain_job],
    schedules=[nightly_retrain_from_env()],
    sensors=[portfolio_retrain_sensor],
)
