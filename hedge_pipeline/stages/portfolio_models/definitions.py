"""The portfolio-model stages' ``Definitions``: meta-controller, joint model, ensemble."""

import dagster as dg

from hedge_pipeline.orchestration.jobs import chain_job
from hedge_pipeline.stages.portfolio_models.assets import (
    hedge_ensemble,
    joint_model,
    meta_controller,
)

portfolio_training_job = chain_job(
    "portfolio_training_job",
    dg.AssetSelection.assets(meta_controller, joint_model, hedge_ensemble),
    "Meta-controller, joint fine-tuning and the ensemble, evaluated and gated.",
)

defs = dg.Definitions(
    assets=[meta_controller, joint_model, hedge_ensemble], jobs=[portfolio_training_job]
)
