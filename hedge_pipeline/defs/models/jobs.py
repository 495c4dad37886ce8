"""Jobs of the models area."""

import dagster as dg

from hedge_pipeline.defs.models.specialist import specialist_agents

specialists_job = dg.define_asset_job(
    "specialists_job",
    selection=dg.AssetSelection.assets(specialist_agents),
    description="Train, evaluate and register one weekly code's hedging agent.",
)
