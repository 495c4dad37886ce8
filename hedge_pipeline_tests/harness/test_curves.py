"""The training-curves figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from hedge_pipeline.harness.curves import plot_training_curves, save_training_curves


def history(epochs: int = 5, val_offset: float = 0.0) -> list[dict[str, float]]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.2 / e + val_offset,
            "lr": 1e-3 / e,
            "grad_norm": 2.0 / e,
            "train_val_ratio": 1.0 / (1.2 + val_offset * e),
            "seconds": 0.5,
            "samples_per_second": 1000.0,
            "val_mae": 0.3 / e,
            "val_r2": 1.0 - 1.0 / e,
        }
        for e in range(1, epochs + 1)
    ]


def titles(figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes if ax.axison]


def test_panels_for_loss_task_metrics_lr_grad_norm_and_ratio() -> None:
    figure = plot_training_curves(history(), "cnn_lstm")
    assert titles(figure) == [
        "loss", "val mae", "val r2", "lr", "grad norm", "train val ratio", "samples per second",
    ]  # fmt: skip
    assert figure.get_suptitle() == "cnn_lstm"
    loss, *_ = figure.axes
    assert [line.get_label() for line in loss.get_lines()] == ["train", "val", "best (5)"]
    assert loss.get_yscale() == "log"
    assert figure.axes[3].get_yscale() == "log"  # lr
    assert figure.axes[4].get_yscale() == "linear"  # grad norm
    assert len(figure.axes) == 8  # a 4×2 grid (800 px wide at 100 dpi), the last panel blank
    assert tuple(figure.get_size_inches() * 100) == (800.0, 1040.0)


def test_loss_panel_is_linear_when_a_loss_is_not_positive() -> None:
    figure = plot_training_curves(history(val_offset=-0.5), "negative risk")
    assert figure.axes[0].get_yscale() == "linear"


def test_no_display_and_no_global_backend_change() -> None:
    backend = matplotlib.get_backend()
    figure = plot_training_curves(history(1), "one epoch")
    assert type(figure.canvas).__name__ == "FigureCanvasAgg"
    assert matplotlib.get_backend() == backend


def test_save_writes_a_png(tmp_path: Path) -> None:
    path = save_training_curves(history(), tmp_path / "reports" / "curves.png", "run")
    assert path == tmp_path / "reports" / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_empty_history_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty history"):
        plot_training_curves([], "nothing")
