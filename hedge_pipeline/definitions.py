"""The code location: every area's ``Definitions`` plus the shared resources."""

import dagster as dg

from hedge_pipeline.defs.market_data.definitions import defs as market_data_defs
from hedge_pipeline.defs.portfolio.definitions import defs as portfolio_defs
from hedge_pipeline.defs.resources import resources_from_env

defs = dg.Definitions.merge(
    market_data_defs, portfolio_defs, dg.Definitions(resources=resources_from_env())
)
