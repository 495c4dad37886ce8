"""The code location's named jobs: chains of steps, run in the run worker's own process.

Every named job here is a chain: market data (raw quotes, then Greeks), a new code's market
data, selection and specialist, a code's nightly retrain, a specialist, the portfolio stages
(meta-controller, joint model, ensemble). No two of its steps could run side by side, and codes
run in parallel as runs of their own. Dagster's default executor would still start a Python
process per step, each importing the definitions again (about 2.5 s of CPU), for steps that
take a fraction of that (market data) or only launch a training child and wait on it. The
implicit asset job that UI materializations and backfills run keeps Dagster's default: a user
may select assets there that do not depend on each other.
"""

from __future__ import annotations

from typing import Any

import dagster as dg


def chain_job(
    name: str, assets: dg.AssetSelection, description: str, **kwargs: Any
) -> dg.UnresolvedAssetJobDefinition:
    """An asset job whose steps run one after the other in the run worker (module docstring)."""
    return dg.define_asset_job(
        name,
        selection=assets,
        description=description,
        executor_def=dg.in_process_executor,
        **kwargs,
    )
