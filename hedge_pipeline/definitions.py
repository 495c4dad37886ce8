"""The code location: every stage's ``Definitions`` plus the shared resources.

Stages are imported as modules: Dagster refuses a module that holds more than one
``Definitions`` object at its top level.
"""

import warnings

import dagster as dg

from hedge_pipeline.orchestration.resources import resources_from_env
from hedge_pipeline.stages.automation import definitions as automation
from hedge_pipeline.stages.cnn_lstm import definitions as cnn_lstm
from hedge_pipeline.stages.market_data import definitions as market_data
from hedge_pipeline.stages.portfolio_models import definitions as portfolio_models
from hedge_pipeline.stages.selection import definitions as selection
from hedge_pipeline.stages.specialists import definitions as specialists

# new_code_job and code_retrain_job take one weekly code through market data (ranges of codes
# per run, BackfillPolicy.multi_run) and its specialist (one code per run): Dagster warns, on
# every load, that it runs such a job one partition per run, which is how the sensor and the
# schedule launch them anyway.
warnings.filterwarnings(
    "ignore", message="Asset job (new_code_job|code_retrain_job) materializes assets with varying"
)

defs = dg.Definitions.merge(
    market_data.defs,
    selection.defs,
    cnn_lstm.defs,
    specialists.defs,
    portfolio_models.defs,
    automation.defs,
    dg.Definitions(resources=resources_from_env()),
)
