"""The models area's ``Definitions``."""

import dagster as dg

from hedge_pipeline.defs.models.cnn_lstm import cnn_lstm_model
from hedge_pipeline.defs.models.jobs import portfolio_training_job, specialists_job
from hedge_pipeline.defs.models.portfolio import hedge_ensemble, joint_model, meta_controller
from hedge_pipeline.defs.models.specialist import specialist_agents

defs = dg.Definitions(
    assets=[cnn_lstm_model, specialist_agents, meta_controller, joint_model, hedge_ensemble],
    jobs=[specialists_job, portfolio_training_job],
)
