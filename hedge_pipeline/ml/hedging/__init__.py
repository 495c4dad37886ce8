"""The hedging problem (DESIGN §7) as pure torch numerics: simulator, baselines, deep hedger.

Nothing here imports Dagster or MLflow: assets and benchmarks call these functions.
"""
