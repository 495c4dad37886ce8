"""The training-curves figure logged with every model (``FitResult.history`` in, PNG out).

Built on ``matplotlib.figure.Figure`` with an Agg canvas, never ``pyplot``: no display is needed
in a child process or CI, no global backend is switched under a caller's feet, and figures are
freed with their last reference instead of piling up in pyplot's registry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hedge_pipeline.harness.trainer import HISTORY_KEYS

# At most 800 px wide at the saved 100 dpi: the width of the Dagster UI's metadata pop-up, where
# a wider image is cut off.
COLUMNS = 2
PANEL_SIZE = (4.0, 2.6)  # inches
LOG_PANELS = {"lr"}  # besides the loss panel


def plot_training_curves(history: Sequence[dict[str, float]], title: str) -> Figure:
    """One panel each: train/val loss, every task metric, LR, gradient norm, train/val ratio,
    throughput. Losses and LR use a log scale when all their values are positive; the best
    epoch (lowest val_loss) is marked on the loss panel.

    Raises:
        ValueError: ``history`` is empty.
    """
    if not history:
        raise ValueError("cannot plot training curves of an empty history")
    metrics = list(dict.fromkeys(k for row in history for k in row if k not in HISTORY_KEYS))
    panels = ["loss", *metrics, "lr", "grad_norm", "train_val_ratio", "samples_per_second"]
    rows = math.ceil(len(panels) / COLUMNS)
    figure = Figure(figsize=(PANEL_SIZE[0] * COLUMNS, PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    axes = figure.subplots(rows, COLUMNS, squeeze=False).ravel()
    epochs = [row["epoch"] for row in history]
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "loss":
            _plot_loss(ax, history, epochs)
        else:
            _plot_series(ax, epochs, [row.get(panel, math.nan) for row in history], panel)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    axes[panels.index("train_val_ratio")].axhline(1.0, color="grey", linewidth=0.8, ls=":")
    return figure


def save_training_curves(history: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    """Write :func:`plot_training_curves` as a PNG at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_training_curves(history, title).savefig(path, format="png", dpi=100)
    return path


def _plot_loss(ax: Axes, history: Sequence[dict[str, float]], epochs: list[float]) -> None:
    train = [row["train_loss"] for row in history]
    val = [row["val_loss"] for row in history]
    ax.plot(epochs, train, marker=".", label="train")
    ax.plot(epochs, val, marker=".", label="val")
    best = min(range(len(val)), key=lambda i: val[i] if math.isfinite(val[i]) else math.inf)
    ax.axvline(epochs[best], color="grey", linewidth=0.8, ls="--", label=f"best ({epochs[best]})")
    ax.legend()
    _finish(ax, "loss", train + val, log=True)


def _plot_series(ax: Axes, epochs: list[float], values: list[float], name: str) -> None:
    ax.plot(epochs, values, marker=".")
    _finish(ax, name.replace("_", " "), values, log=name in LOG_PANELS)


def _finish(ax: Axes, title: str, values: list[float], log: bool) -> None:
    """Title, grid, and a log scale when asked and every value is positive (log ≤ 0 is lost)."""
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    finite = [v for v in values if math.isfinite(v)]
    if log and finite and min(finite) > 0:
        ax.set_yscale("log")
