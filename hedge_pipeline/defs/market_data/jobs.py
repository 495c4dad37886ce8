"""Jobs of the market-data area."""

import dagster as dg

from hedge_pipeline.defs.market_data.assets import greeks_features, raw_option_chains

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.assets(raw_option_chains, greeks_features),
    description="Ingest one weekly code's quotes and compute its Greeks features.",
)
