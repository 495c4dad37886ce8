"""The portfolio-model stages' ``Definitions``: meta-controller, joint model, ensemble."""

import dagster as dg

from hedge_pipeline.stages.portfolio_models.assets import (
    hedge_ensemble,
    joint_model,
    meta_controller,
)

portfolio_training_job = dg.define_asset_job(
    "portfolio_training_job",
    selection=dg.AssetSelection.assets(meta_controller, joint_model, hedge_ensemble),
    description="Meta-controller, joint fine-tuning and the ensemble, evaluated and gated.",
)

defs = dg.Definitions(
    assets=[meta_controller, joint_model, hedge_ensemble], jobs=[portfolio_training_job]
)
