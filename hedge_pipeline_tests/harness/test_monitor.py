"""The training monitor: hard divergence errors, and warnings once per episode."""

from __future__ import annotations

import math

import pytest
import torch

from hedge_pipeline.harness.monitor import TrainingDiverged, TrainingMonitor


class Warnings(list):
    def warning(self, message: str) -> None:
        self.append(message)


def make_monitor(patience: int = 6, device: str = "cpu", tolerate: bool = False):
    warnings = Warnings()
    return TrainingMonitor(warnings, patience, torch.device(device), tolerate), warnings


def feed(monitor: TrainingMonitor, val_losses: list[float], stale: list[int]) -> None:
    history = []
    for epoch, (val_loss, stale_epochs) in enumerate(zip(val_losses, stale, strict=True), 1):
        history.append({"epoch": epoch, "val_loss": val_loss, "lr": 1e-3})
        monitor.check_epoch(history, stale_epochs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_raises_with_epoch_batch_and_lr(bad: float) -> None:
    monitor, _ = make_monitor()
    with pytest.raises(TrainingDiverged) as caught:
        monitor.check_step([(11, 0.5), (12, bad)], 1.0, epoch=3, lr=1e12)
    assert str(caught.value) == (
        f"training diverged: loss is {bad} at epoch 3, batch 12 (lr 1e+12); nothing was registered"
    )


def test_non_finite_grad_norm_raises_unless_the_scaler_handles_it() -> None:
    monitor, _ = make_monitor()
    with pytest.raises(TrainingDiverged, match="gradient norm is inf at epoch 2, batch 8"):
        monitor.check_step([(7, 0.5), (8, 0.4)], math.inf, epoch=2, lr=1e-3)
    fp16_monitor, _ = make_monitor(tolerate=True)
    fp16_monitor.check_step([(8, 0.4)], math.inf, epoch=2, lr=1e-3)  # the step is skipped


def test_non_finite_val_loss_raises() -> None:
    monitor, _ = make_monitor()
    with pytest.raises(TrainingDiverged, match="val_loss is nan at epoch 2"):
        feed(monitor, [1.0, math.nan], [0, 1])


def test_jump_above_three_times_best_warns_once_per_episode() -> None:
    monitor, warnings = make_monitor(patience=100)
    feed(monitor, [1.0, 0.5, 1.6, 1.7, 0.6, 2.0], [0, 0, 1, 2, 3, 4])
    jumps = [w for w in warnings if "more than 3×" in w]
    assert len(jumps) == 2  # 1.6 and 1.7: one episode; 0.6 ends it; 2.0 starts another
    assert jumps[0].startswith("val_loss 1.6 at epoch 3 is more than 3× the best so far (0.5)")


def test_jump_rule_is_off_for_non_positive_losses() -> None:
    """A negative best (e.g. a risk measure of P&L) makes "3× the best" meaningless."""
    monitor, warnings = make_monitor(patience=100)
    feed(monitor, [-1.0, -0.5], [0, 1])
    assert not warnings


def test_three_consecutive_rises_warn() -> None:
    monitor, warnings = make_monitor(patience=100)
    feed(monitor, [1.0, 1.1, 1.2], [0, 1, 2])
    assert not warnings  # two rises only
    feed(monitor, [1.0, 1.1, 1.2, 1.3, 1.4], [0, 1, 2, 3, 4])
    rising = [w for w in warnings if "risen for 3 consecutive epochs" in w]
    assert rising == [
        "val_loss has risen for 3 consecutive epochs (1 → 1.1 → 1.2 → 1.3, epoch 4): "
        "training may be diverging or overfitting"
    ]


def test_plateau_warns_once_at_half_patience_and_rearms() -> None:
    monitor, warnings = make_monitor(patience=6)  # plateau after 3 stale epochs
    feed(monitor, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5], [0, 1, 2, 3, 4, 0, 1, 2, 3])
    plateaus = [w for w in warnings if "plateau" in w]
    assert len(plateaus) == 2
    assert plateaus[0].startswith(
        "epoch 4: val_loss has not improved for 3 epochs (best 1 at epoch 1)"
    )


def test_plateau_needs_at_least_two_epochs() -> None:
    monitor, warnings = make_monitor(patience=2)
    feed(monitor, [1.0, 1.0], [0, 1])
    assert not warnings
    feed(monitor, [1.0, 1.0, 1.0], [0, 1, 2])
    assert len(warnings) == 1


def test_gpu_memory_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    total, reserved = 80 * 2**30, [70 * 2**30]
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": total})
    )
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: reserved[0])
    monitor, warnings = make_monitor(device="cuda:0")

    monitor.check_memory()  # 87.5 %
    reserved[0] = 75 * 2**30
    monitor.check_memory()  # 94 %: warns
    monitor.check_memory()  # same episode: quiet
    assert warnings == [
        "GPU memory on cuda:0: 94% reserved (75.0 of 80.0 GiB); a larger batch or model will "
        "run out of memory"
    ]


def test_memory_is_not_checked_on_cpu() -> None:
    monitor, warnings = make_monitor()
    monitor.check_memory()
    assert not warnings


def test_state_round_trip_keeps_episodes_across_a_resume() -> None:
    monitor, warnings = make_monitor(patience=6)
    feed(monitor, [1.0, 1.0, 1.0, 1.0], [0, 1, 2, 3])
    resumed, resumed_warnings = make_monitor(patience=6)
    resumed.load_state_dict(monitor.state_dict())
    history = [{"epoch": e, "val_loss": 1.0, "lr": 1e-3} for e in range(1, 6)]
    resumed.check_epoch(history, stale_epochs=4)
    assert len(warnings) == 1 and not resumed_warnings  # the plateau was already reported
