"""The selection stage's ``Definitions``."""

import dagster as dg

from hedge_pipeline.stages.selection.assets import portfolio_selection

defs = dg.Definitions(assets=[portfolio_selection])
