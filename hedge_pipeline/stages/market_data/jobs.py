"""Jobs of the market-data area."""

import dagster as dg

from hedge_pipeline.orchestration.jobs import chain_job
from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains

# Its two steps run one after the other in the run worker's process (orchestration.jobs): the
# second reads what the first wrote, both behind pool duckdb_writer. Two interpreter starts in
# a run whose work is a fraction of one decided the time of `hedge run`'s per-code market data
# (benchmarks/pipeline.md, "A thousand partitions").
market_data_job = chain_job(
    "market_data_job",
    dg.AssetSelection.assets(raw_option_chains, greeks_features),
    "Ingest one weekly code's quotes and compute its Greeks features.",
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

new_code_job = chain_job(
    "new_code_job",
    dg.AssetSelection.assets(*NEW_CODE_ASSETS),
    "A new weekly code joins the trained portfolio: its market data, portfolio_selection "
    "again, and its specialist.",
)
