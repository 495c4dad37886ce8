"""The models area's ``Definitions``."""

import dagster as dg

from hedge_pipeline.defs.models.cnn_lstm import cnn_lstm_model
from hedge_pipeline.defs.models.jobs import specialists_job
from hedge_pipeline.defs.models.specialist import specialist_agents

defs = dg.Definitions(assets=[cnn_lstm_model, specialist_agents], jobs=[specialists_job])
