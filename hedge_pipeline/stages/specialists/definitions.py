"""The specialist stage's ``Definitions``: the asset and the one-code training job."""

import dagster as dg

from hedge_pipeline.stages.specialists.asset import specialist_agents

specialists_job = dg.define_asset_job(
    "specialists_job",
    selection=dg.AssetSelection.assets(specialist_agents),
    description="Train, evaluate and register one weekly code's hedging agent.",
)

defs = dg.Definitions(assets=[specialist_agents], jobs=[specialists_job])
