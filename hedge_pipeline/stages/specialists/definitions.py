"""The specialist stage's ``Definitions``: the asset and the one-code training job."""

import dagster as dg

from hedge_pipeline.orchestration.jobs import chain_job
from hedge_pipeline.stages.specialists.asset import specialist_agents

specialists_job = chain_job(
    "specialists_job",
    dg.AssetSelection.assets(specialist_agents),
    "Train, evaluate and register one weekly code's hedging agent.",
)

defs = dg.Definitions(assets=[specialist_agents], jobs=[specialists_job])
