"""What each ``hedge run --select`` value materializes, in lineage order.

Read by the command (``cli.main``) and by the pipeline benchmark (``bench.pipeline``), which times
the same stages; it lives apart from both so that neither imports the other.
"""

from __future__ import annotations

# Per-code steps name a job run once per weekly code; the others are portfolio-level assets.
PER_CODE_JOBS = {"market_data": "market_data_job", "specialists": "specialists_job"}
SELECTIONS: dict[str, tuple[str, ...]] = {
    "market_data": ("market_data",),
    "portfolio": ("portfolio_selection",),
    "cnn_lstm": ("cnn_lstm_model",),
    "specialists": ("specialists",),
    "portfolio_training": ("meta_controller", "joint_model", "hedge_ensemble"),
    "all": (
        "market_data",
        "portfolio_selection",
        "cnn_lstm_model",
        "specialists",
        "meta_controller",
        "joint_model",
        "hedge_ensemble",
    ),
}
