"""The hedging problem (docs/design.md §7) as pure torch numerics: simulator, baselines, learners.

Shared by the specialist and portfolio-model stages and by ``hedge bench``: the batched simulator,
the analytic baselines, the deep hedger and PPO, per-code markets calibrated to quotes, and the
gymnasium faces. Nothing here imports Dagster or MLflow.
"""
