"""The market-data area's ``Definitions``."""

import dagster as dg

from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains
from hedge_pipeline.stages.market_data.jobs import market_data_job, new_code_job
from hedge_pipeline.stages.market_data.sensors import new_weekly_codes_sensor

defs = dg.Definitions(
    assets=[raw_option_chains, greeks_features],
    jobs=[market_data_job, new_code_job],
    sensors=[new_weekly_codes_sensor],
)
