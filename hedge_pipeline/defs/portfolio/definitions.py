"""The portfolio area's ``Definitions``."""

import dagster as dg

from hedge_pipeline.defs.portfolio.assets import portfolio_selection

defs = dg.Definitions(assets=[portfolio_selection])
