"""Jobs of the models area."""

import dagster as dg

from hedge_pipeline.defs.models.portfolio import hedge_ensemble, joint_model, meta_controller
from hedge_pipeline.defs.models.specialist import specialist_agents

specialists_job = dg.define_asset_job(
    "specialists_job",
    selection=dg.AssetSelection.assets(specialist_agents),
    description="Train, evaluate and register one weekly code's hedging agent.",
)

portfolio_training_job = dg.define_asset_job(
    "portfolio_training_job",
    selection=dg.AssetSelection.assets(meta_controller, joint_model, hedge_ensemble),
    description="Meta-controller, joint fine-tuning and the ensemble, evaluated and gated.",
)
