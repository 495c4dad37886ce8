"""hedge_pipeline: a Dagster code location that turns option quotes into hedging models."""
