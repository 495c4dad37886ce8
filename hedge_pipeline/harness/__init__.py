"""The shared stage lifecycle: the Pipes child session, tracking, training loop, checkpoints.

Imported by every training stage's child (``python -m hedge_pipeline.training <stage>``); never
imports Dagster or opens the DuckDB file.
"""
