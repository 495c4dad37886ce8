"""The automation area's ``Definitions``: the nightly schedule and its job.

``portfolio_retrain_sensor`` (``sensors.py``) targets ``portfolio_training_job``; it joins
these Definitions when that job exists in the code location.
"""

import dagster as dg

from hedge_pipeline.defs.automation.jobs import code_retrain_job
from hedge_pipeline.defs.automation.schedules import nightly_retrain_from_env

defs = dg.Definitions(jobs=[code_retrain_job], schedules=[nightly_retrain_from_env()])
