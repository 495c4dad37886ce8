"""Jobs of the market-data area."""

import dagster as dg

from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains

# Its two steps run one after the other in the run worker's process (the code location's
# executor): the second reads what the first wrote, both behind pool duckdb_writer.
market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.assets(raw_option_chains, greeks_features),
    description="Ingest one weekly code's quotes and compute its Greeks features.",
)

# A code that arrives once the models exist joins the portfolio in one run: its market data,
# the selection again (the code's book; other codes' books do not change with it) and its
# specialist, so that portfolio_retrain_sensor sees it and retrains the portfolio stages. The
# other codes' partitions are not touched. Assets of other areas are named, not imported.
NEW_CODE_ASSETS = (
    "raw_option_chains",
    "greeks_features",
    "portfolio_selection",
    "specialist_agents",
)

new_code_job = dg.define_asset_job(
    "new_code_job",
    selection=dg.AssetSelection.assets(*NEW_CODE_ASSETS),
    description=(
        "A new weekly code joins the trained portfolio: its market data, portfolio_selection "
        "again, and its specialist."
    ),
)
