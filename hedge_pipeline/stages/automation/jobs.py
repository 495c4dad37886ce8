"""The job the nightly schedule runs once per weekly code.

Ingest, Greeks and the specialist of one code go in one run so that a code's nightly retrain
is one line in the runs list, fails as one unit, and its specialist trains on the quotes that
the same run just stored. ``portfolio_selection`` and ``cnn_lstm_model`` are not part of it:
they span every code and are refreshed by hand (``hedge run --select portfolio|cnn_lstm``).
"""

import dagster as dg

from hedge_pipeline.orchestration.jobs import chain_job

CODE_RETRAIN_ASSETS = ("raw_option_chains", "greeks_features", "specialist_agents")

code_retrain_job = chain_job(
    "code_retrain_job",
    dg.AssetSelection.assets(*CODE_RETRAIN_ASSETS),
    "Re-ingest one weekly code, recompute its Greeks and retrain its specialist.",
    tags={"hedge/area": "automation"},
)
