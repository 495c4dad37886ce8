"""The code location: every area's ``Definitions`` plus the shared resources.

Areas are imported as modules: Dagster refuses a module that holds more than one
``Definitions`` object at its top level.
"""

import dagster as dg

from hedge_pipeline.defs.automation import definitions as automation
from hedge_pipeline.defs.market_data import definitions as market_data
from hedge_pipeline.defs.models import definitions as models
from hedge_pipeline.defs.portfolio import definitions as portfolio
from hedge_pipeline.defs.resources import resources_from_env

defs = dg.Definitions.merge(
    market_data.defs,
    portfolio.defs,
    models.defs,
    automation.defs,
    dg.Definitions(resources=resources_from_env()),
)
