"""One package per lineage stage (docs/design.md §1), in lineage order.

market_data → selection → cnn_lstm → specialists → portfolio_models; ``automation`` holds the
jobs, schedule and sensors that drive them. Each stage package holds its asset(s), its config, its
child entry point (``train*.py``) and its own algorithms; only its asset modules import Dagster.
"""
