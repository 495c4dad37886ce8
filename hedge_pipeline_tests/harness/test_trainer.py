"""``fit`` on a tiny linear regression: learning, exact resume, signals, divergence, stopping.

Also runnable as ``python -m hedge_pipeline_tests.harness.test_trainer CHECKPOINT_DIR`` (the child
process the SIGKILL and SIGTERM tests start and kill).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hedge_pipeline.harness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from hedge_pipeline.harness.trainer import (
    HISTORY_KEYS,
    ConsoleReporter,
    FitResult,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    fit,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURES = 4
EPOCHS = 6
# Large enough to learn in a few epochs, small enough for the plateau schedule to stay put.
CONFIG = TrainConfig(epochs=EPOCHS, lr=0.05, patience=EPOCHS)


class LinearTask:
    """y = x·w + noise: ``samples`` training pairs reshuffled each epoch, 64 validation pairs.

    Deterministic given the epoch, as ``fit`` requires. Each global batch of ``batch_size`` is
    split across ranks (rank r takes every world_size-th sample), so DDP with the same global
    batch computes the same mean gradient as one process.

    Test levers (never needed by ``fit`` itself): ``delay`` seconds per batch slows the child
    processes down enough to be killed mid-run; ``sigterm_at=(epoch, batch)`` makes this
    process send itself SIGTERM when drawing that batch (``batch=0``: during validation), an
    operator's signal at a known point; ``nan_at=(epoch, batch)`` returns a NaN loss there.
    """

    def __init__(
        self,
        batch_size: int = 32,
        samples: int = 256,
        delay: float = 0.0,
        sigterm_at: tuple[int, int] | None = None,
        nan_at: tuple[int, int] | None = None,
    ) -> None:
        generator = torch.Generator().manual_seed(0)
        weights = torch.randn(FEATURES, 1, generator=generator)
        self.x = torch.randn(samples, FEATURES, generator=generator)
        self.y = self.x @ weights + 0.1 * torch.randn(samples, 1, generator=generator)
        self.val_x = torch.randn(64, FEATURES, generator=generator)
        self.val_y = self.val_x @ weights
        self.batch_size = batch_size
        self.delay = delay
        self.sigterm_at = sigterm_at
        self.nan_at = nan_at
        self.epoch = 0

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterator[tuple[torch.Tensor, ...]]:
        self.epoch = epoch
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(epoch))
        for number, start in enumerate(range(0, len(order), self.batch_size), start=1):
            if (epoch, number) == self.sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(self.delay)
            index = order[start : start + self.batch_size][rank::world_size]
            flag = torch.tensor(float((epoch, number) == self.nan_at))
            yield self.x[index], self.y[index], flag

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, ...], device: torch.device
    ) -> torch.Tensor:
        x, y, nan_flag = (t.to(device) for t in batch)
        loss = F.mse_loss(model(x), y)
        return torch.where(nan_flag > 0, torch.nan, loss)

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        if (self.epoch, 0) == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        error = model(self.val_x.to(device)) - self.val_y.to(device)
        return {"val_loss": error.pow(2).mean().item(), "val_mae": error.abs().mean().item()}


class ScriptedValTask(LinearTask):
    """Validation losses read from a script, to drive early stopping and the LR plateau."""

    def __init__(self, val_losses: list[float]) -> None:
        super().__init__()
        self.val_losses = val_losses

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        return {"val_loss": self.val_losses[self.epoch - 1]}


class RecordingReporter:
    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, metrics))


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(FEATURES, 1)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module, atol: float = 0.0) -> None:
    for (name, left), right in zip(weights(a).items(), weights(b).values(), strict=True):
        torch.testing.assert_close(left, right, atol=atol, rtol=0.0, msg=name)


def run_fit(
    directory: Path,
    task: LinearTask | None = None,
    config: TrainConfig = CONFIG,
    model_seed: int = 0,
    reporter: RecordingReporter | None = None,
    **kwargs,
) -> FitResult:
    return fit(
        make_model(model_seed),
        task or LinearTask(),
        config,
        directory,
        reporter or RecordingReporter(),
        **kwargs,
    )


def comparable(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """History without the wall-clock columns."""
    return [
        {k: v for k, v in row.items() if k not in ("seconds", "samples_per_second")}
        for row in history
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    """The uninterrupted run every resume must reproduce."""
    return run_fit(tmp_path_factory.mktemp("reference"))


def test_fresh_fit_learns_checkpoints_and_reports(tmp_path: Path, reference: FitResult) -> None:
    reporter = RecordingReporter()
    result = run_fit(tmp_path, reporter=reporter)

    history = result.history
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert history[-1]["val_loss"] < 0.05 * history[0]["val_loss"]
    assert list(history[0])[: len(HISTORY_KEYS)] == list(HISTORY_KEYS)
    assert "val_mae" in history[0]
    assert result.start_epoch == 1 and result.stopped == "completed" and result.device == "cpu"
    assert result.best_val_loss == min(row["val_loss"] for row in history)
    assert comparable(history) == comparable(reference.history)  # seeded: reproducible

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(
        f"{name}{suffix}"
        for name in ("last.pt", "best.pt", "epoch-0004.pt", "epoch-0005.pt", "epoch-0006.pt")
        for suffix in ("", ".sha256")
    )
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == result.best_epoch
    for name, value in best["model"].items():
        torch.testing.assert_close(result.model.state_dict()[name], value, atol=0, rtol=0)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == EPOCHS

    assert [epoch for epoch, _ in reporter.epochs] == list(range(1, EPOCHS + 1))
    summaries = [m for m in reporter.infos if m.startswith("epoch ")]
    assert len(summaries) == EPOCHS
    assert summaries[0].startswith("epoch 1/6 train_loss=") and "samples/s" in summaries[0]
    assert not reporter.warnings


def test_completed_run_is_not_trained_again(tmp_path: Path, reference: FitResult) -> None:
    run_fit(tmp_path)
    again = run_fit(tmp_path, model_seed=1)
    assert again.start_epoch == EPOCHS + 1
    assert comparable(again.history) == comparable(reference.history)
    assert_same_weights(again.model, reference.model)


@pytest.mark.parametrize(
    ("sigterm_at", "grad_accum_steps", "batches_done"),
    [
        # The loop draws one batch ahead: the signal sent while drawing batch 4 lands while
        # batch 3 is trained, and the loop stops after the optimizer step in flight.
        ((3, 4), 1, 3),
        ((3, 4), 2, 4),  # accumulating: the step of batches 3–4 completes first
        ((3, 0), 1, 0),  # during validation: epoch 3 is finished and saved as usual
    ],
)
def test_resume_after_signal_equals_uninterrupted(
    tmp_path: Path, sigterm_at: tuple[int, int], grad_accum_steps: int, batches_done: int
) -> None:
    config = TrainConfig(epochs=EPOCHS, lr=0.05, patience=EPOCHS, grad_accum_steps=grad_accum_steps)
    uninterrupted = run_fit(tmp_path / "straight", config=config)

    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="interrupted by SIGTERM") as caught:
        run_fit(tmp_path / "run", LinearTask(sigterm_at=sigterm_at), config)
    assert caught.value.epoch == 3
    assert caught.value.checkpoint == tmp_path / "run" / "last.pt"
    saved = load_checkpoint(caught.value.checkpoint)
    assert (saved["epoch"], saved["batches_done"]) == (3 - (batches_done > 0), batches_done)
    assert signal.getsignal(signal.SIGTERM) is handler  # restored

    resumed = run_fit(tmp_path / "run", config=config, model_seed=1)  # other init: overwritten
    assert resumed.start_epoch == saved["epoch"] + 1
    assert_same_weights(resumed.model, uninterrupted.model)
    assert comparable(resumed.history) == comparable(uninterrupted.history)


def test_resume_with_another_world_size_trains_the_interrupted_epoch_in_full(
    tmp_path: Path,
) -> None:
    """Rank-local state (RNG streams, partial sums, the shard position) does not carry over."""
    with pytest.raises(TrainingInterrupted):
        run_fit(tmp_path, LinearTask(sigterm_at=(3, 4)))
    state = load_checkpoint(tmp_path / "last.pt")
    save_checkpoint({**state, "world_size": 2, "ranks": state["ranks"] * 2}, tmp_path / "last.pt")

    reporter = RecordingReporter()
    resumed = run_fit(tmp_path, reporter=reporter)
    assert reporter.warnings[0] == (
        "checkpoint written by 2 processes, resumed by 1: RNG streams restart from the seed "
        "and the interrupted epoch is trained in full"
    )
    assert resumed.start_epoch == 3 and len(resumed.history) == EPOCHS


def _start_child(directory: Path, epochs: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "hedge_pipeline_tests.harness.test_trainer", str(directory)),
            *("--epochs", str(epochs), "--delay", "0.01"),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_epoch(child: subprocess.Popen[str], last: Path, epoch: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert child.poll() is None, child.communicate()
        try:
            if load_checkpoint(last)["epoch"] >= epoch:
                return
        except CheckpointError:  # not written yet, or caught between two renames
            pass
        time.sleep(0.02)
    child.kill()
    raise AssertionError(f"no checkpoint of epoch {epoch} within 60 s")


@pytest.mark.slow
def test_sigkill_then_resume_continues_after_last_epoch(tmp_path: Path) -> None:
    config = TrainConfig(epochs=12, lr=0.05, patience=12)
    child = _start_child(tmp_path, epochs=12)
    _wait_for_epoch(child, tmp_path / "last.pt", 2)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL

    saved = load_checkpoint(tmp_path / "last.pt")
    assert 2 <= saved["epoch"] < 12 and saved["batches_done"] == 0
    resumed = run_fit(tmp_path, config=config, model_seed=1)
    assert resumed.start_epoch == saved["epoch"] + 1
    assert_same_weights(resumed.model, run_fit(tmp_path / "straight", config=config).model)


@pytest.mark.slow
def test_sigterm_leaves_valid_checkpoint_and_fails_with_message(tmp_path: Path) -> None:
    config = TrainConfig(epochs=12, lr=0.05, patience=12)
    child = _start_child(tmp_path, epochs=12)
    _wait_for_epoch(child, tmp_path / "last.pt", 1)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=60)

    assert child.returncode != 0
    assert "TrainingInterrupted: training interrupted by SIGTERM" in stderr
    saved = load_checkpoint(tmp_path / "last.pt")
    assert str(tmp_path / "last.pt") in stderr
    resumed = run_fit(tmp_path, config=config, model_seed=1)
    assert resumed.start_epoch == saved["epoch"] + 1
    assert_same_weights(resumed.model, run_fit(tmp_path / "straight", config=config).model)


def test_nan_loss_raises_diverged_and_leaves_no_checkpoint_of_that_epoch(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 2, batch 3 \(lr 5e-02\)"):
        run_fit(tmp_path, LinearTask(nan_at=(2, 3)))
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not (tmp_path / "epoch-0002.pt").exists()


def test_huge_lr_raises_diverged(tmp_path: Path) -> None:
    """lr 1e12: AdamW's decay step multiplies the weights by 1 − lr·wd ≈ −1e10; inf in 3 steps.

    (Without weight decay Adam's step is bounded by lr, so a linear model's loss only grows to
    about 1e24, finite: the monitor's divergence warning, not this error, covers that case.)
    """
    config = TrainConfig(epochs=3, lr=1e12, weight_decay=0.01)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, batch \d+ \(lr 1e\+12\)"):
        run_fit(tmp_path, config=config)
    assert not (tmp_path / "best.pt").exists()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(200, 210):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _garbage_with_valid_checksum(path: Path) -> None:
    path.write_bytes(b"not a checkpoint")
    digest = hashlib.sha256(b"not a checkpoint").hexdigest()
    path.with_name("last.pt.sha256").write_text(f"{digest}  last.pt\n")


def _drop_checksum(path: Path) -> None:
    path.with_name("last.pt.sha256").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate, "fails its sha256 check"),
        (_flip_bytes, "fails its sha256 check"),
        (_garbage_with_valid_checksum, "cannot be unpickled"),
        (_drop_checksum, "has no checksum file"),
    ],
)
def test_unusable_checkpoint_warns_and_starts_fresh(
    tmp_path: Path, reference: FitResult, damage, reason: str
) -> None:
    run_fit(tmp_path)
    damage(tmp_path / "last.pt")
    reporter = RecordingReporter()
    result = run_fit(tmp_path, reporter=reporter)

    assert result.start_epoch == 1
    assert comparable(result.history) == comparable(reference.history)
    [warning] = reporter.warnings
    assert f"not resuming from {tmp_path / 'last.pt'}" in warning and reason in warning
    [aside] = tmp_path.glob("unreadable-*")
    assert (aside / "last.pt").exists() and (aside / "epoch-0006.pt").exists()


def test_config_change_moves_stale_checkpoints_aside(tmp_path: Path) -> None:
    old = TrainConfig(epochs=3, lr=0.05)
    run_fit(tmp_path, config=old)
    reporter = RecordingReporter()
    result = run_fit(tmp_path, config=CONFIG, reporter=reporter)

    assert result.start_epoch == 1
    [warning] = reporter.warnings
    assert f"config_hash {old.config_hash()} is not {CONFIG.config_hash()}" in warning
    stale = tmp_path / f"stale-{old.config_hash()}"
    assert sorted(p.name for p in stale.glob("*.pt")) == [
        "best.pt", "epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt", "last.pt",
    ]  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == EPOCHS


def test_model_change_starts_fresh(tmp_path: Path) -> None:
    run_fit(tmp_path, config=TrainConfig(epochs=2))
    reporter = RecordingReporter()
    wider = nn.Sequential(nn.Linear(FEATURES, 8), nn.Linear(8, 1))
    result = fit(wider, LinearTask(), TrainConfig(epochs=2), tmp_path, reporter)
    assert result.start_epoch == 1
    assert "other parameter shapes" in reporter.warnings[0]


def test_early_stopping_restores_best_weights(tmp_path: Path) -> None:
    config = TrainConfig(epochs=10, lr=0.05, patience=2, min_delta=0.01)
    task = ScriptedValTask([1.0, 0.5, 0.495, 0.7, 0.1, 0.1])  # 0.495: not better by min_delta
    reporter = RecordingReporter()
    result = run_fit(tmp_path, task, config, reporter=reporter)

    assert result.stopped == "early_stopping"
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert (result.best_epoch, result.best_val_loss) == (2, 0.5)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 2
    for name, value in best["model"].items():
        torch.testing.assert_close(result.model.state_dict()[name], value, atol=0, rtol=0)
    assert any(m.startswith("early stopping: val_loss has not improved") for m in reporter.infos)

    again = run_fit(tmp_path, ScriptedValTask([]), config)
    assert again.stopped == "early_stopping" and again.start_epoch == 5


def test_grad_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    """2 × 16 accumulated = 32 at once; 240 samples, so each epoch ends on a short group."""
    big = run_fit(tmp_path / "big", LinearTask(batch_size=32, samples=240))
    config = TrainConfig(epochs=EPOCHS, lr=0.05, patience=EPOCHS, grad_accum_steps=2)
    accumulated = run_fit(tmp_path / "accum", LinearTask(batch_size=16, samples=240), config)
    assert_same_weights(accumulated.model, big.model, atol=1e-6)
    for a, b in zip(accumulated.history, big.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_cosine_schedule_warms_up_then_decays(tmp_path: Path) -> None:
    config = TrainConfig(epochs=5, lr=0.01, schedule="cosine", warmup_epochs=2)
    lrs = [row["lr"] for row in run_fit(tmp_path, config=config).history]
    expected = [0.01 / 3, 0.02 / 3, 0.01, 0.01 * 0.75, 0.01 * 0.25]
    assert lrs == pytest.approx(expected)


def test_plateau_schedule_halves_lr(tmp_path: Path) -> None:
    config = TrainConfig(epochs=6, lr=0.01, patience=5)  # plateau patience: 5 // 2 = 2
    task = ScriptedValTask([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    lrs = [row["lr"] for row in run_fit(tmp_path, task, config).history]
    assert lrs == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005, 0.005])


def test_fit_in_a_worker_thread_trains_without_signal_handlers(tmp_path: Path) -> None:
    """Python allows signal handlers in the main thread only: elsewhere fit just trains."""
    results: list[FitResult] = []
    thread = threading.Thread(target=lambda: results.append(run_fit(tmp_path)))
    thread.start()
    thread.join()
    assert results and results[0].stopped == "completed"


def test_extra_state_is_checkpointed_and_checked(tmp_path: Path) -> None:
    extra = {"dataset": "ab12", "scale": torch.tensor([1.0, 2.0]), "hidden": [8, 8]}
    run_fit(tmp_path, config=TrainConfig(epochs=1), extra_state=extra)
    stored = load_checkpoint(tmp_path / "best.pt")["extra_state"]
    assert stored["dataset"] == "ab12" and stored["hidden"] == [8, 8]
    torch.testing.assert_close(stored["scale"], extra["scale"])

    with pytest.raises(TypeError, match="extra_state must hold only tensors"):
        run_fit(tmp_path / "bad", extra_state={"scale": np.ones(2)})
    assert not (tmp_path / "bad").exists()


def test_missing_val_loss_is_a_clear_error(tmp_path: Path) -> None:
    class NoValLoss(LinearTask):
        def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
            return {"mse": 1.0}

    with pytest.raises(ValueError, match="must return 'val_loss'; got \\['mse'\\]"):
        run_fit(tmp_path, NoValLoss())


def test_a_task_without_batches_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"task\.batches yielded no samples for epoch 1 on rank 0"):
        run_fit(tmp_path, LinearTask(samples=0))


def test_config_hash_is_stable_and_config_is_validated() -> None:
    assert TrainConfig().config_hash() == TrainConfig().config_hash()
    assert len(TrainConfig().config_hash()) == 16
    assert TrainConfig(lr=0.1).config_hash() != TrainConfig().config_hash()
    with pytest.raises(ValueError, match="grad_accum_steps must be ≥ 1; patience must be ≥ 1"):
        TrainConfig(grad_accum_steps=0, patience=0)
    with pytest.raises(ValueError, match="schedule must be"):
        TrainConfig(schedule="step")  # type: ignore[arg-type]


def main() -> None:
    """Child process of the signal tests: one fit, printing to stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    config = TrainConfig(epochs=args.epochs, lr=0.05, patience=args.epochs)
    fit(make_model(), LinearTask(delay=args.delay), config, args.checkpoint_dir, ConsoleReporter())


if __name__ == "__main__":
    main()


class StayNearStartTask(LinearTask):
    """Validation penalizes any move away from the initial weights: training can only lose."""

    def __init__(self, start: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.start = start

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        moved = sum(float(((p - self.start[k]) ** 2).sum()) for k, p in model.state_dict().items())
        return {"val_loss": 1.0 + moved}


def test_validate_initial_keeps_the_untrained_model_when_no_epoch_beats_it(tmp_path: Path):
    start = weights(make_model())
    reporter = RecordingReporter()
    config = replace(CONFIG, epochs=4, patience=2, validate_initial=True)
    result = run_fit(tmp_path, StayNearStartTask(start), config, reporter=reporter)
    assert result.best_epoch == 0 and result.best_val_loss == 1.0
    assert result.stopped == "early_stopping" and len(result.history) == 2
    for name, value in weights(result.model).items():
        torch.testing.assert_close(value, start[name], rtol=0.0, atol=0.0)
    assert any(m.startswith("epoch 0 (untrained): val_loss=1") for m in reporter.infos)


class TwoParts(nn.Module):
    """A linear model split in two components: ``first`` then a scalar ``second``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Linear(FEATURES, 1)
        self.second = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


def test_component_learning_rates_and_per_component_clipping(tmp_path: Path) -> None:
    model = TwoParts()
    start = weights(model)
    config = replace(
        CONFIG,
        epochs=2,
        component_lr=(("first", 0.05), ("second", 1e-9)),
        clip_per_component=True,
    )
    fit(model, LinearTask(), config, tmp_path / "ck", RecordingReporter())
    after = weights(model)
    for name in ("second.weight", "second.bias"):  # the slow component barely moves
        torch.testing.assert_close(after[name], start[name], rtol=0.0, atol=1e-6)
    assert not torch.allclose(after["first.weight"], start["first.weight"])
    with pytest.raises(ValueError, match="the model's children"):
        fit(TwoParts(), LinearTask(), replace(config, component_lr=(("third", 0.1),)),
            tmp_path / "other", RecordingReporter())  # fmt: skip
    with pytest.raises(ValueError, match="without a learning rate"):
        fit(TwoParts(), LinearTask(), replace(config, component_lr=(("first", 0.1),)),
            tmp_path / "third", RecordingReporter())  # fmt: skip
