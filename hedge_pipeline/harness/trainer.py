"""The generic training loop of every model stage: ``fit(model, task, config, ...)``.

A stage supplies a model and a :class:`TrainTask` (its batches, its loss, its validation); the
loop supplies everything a long unattended run needs: AdamW with a schedule, gradient clipping
and accumulation, mixed precision on CUDA, data parallelism under ``torchrun``, early stopping,
atomic checkpoints, exact resume, signal handling and a monitor that stops a diverged run
before it can be registered. Read ``fit`` top to bottom for the whole algorithm.

Resume semantics
----------------
``last.pt`` always holds a position the loop can continue from *exactly*: ``epoch`` is the
last completed epoch and ``batches_done`` the micro-batches of the next epoch already trained
(0, except after a signal). On SIGTERM/SIGINT the loop finishes the optimizer step in flight,
writes ``last.pt`` with ``batches_done > 0`` and raises :class:`TrainingInterrupted`; if the
signal comes during validation, the epoch is finished and saved as usual first. A resume
restores model, optimizer, schedule, scaler, monitor and RNG states, draws
``task.batches(epoch, ...)`` again (deterministic given the epoch) and skips the batches
already trained, so an interrupted-then-resumed run ends with the same weights as an
uninterrupted one (bit for bit on CPU). SIGKILL cannot be caught: the resume then starts from
the last completed epoch, which is trained from its first batch again.

A checkpoint resumes only the run that wrote it: same ``TrainConfig.config_hash()`` and same
model parameter names, shapes and dtypes. Anything else (another config, another model, a
file failing its checksum or not unpickling) is reported with ``reporter.warning`` and moved
aside (``stale-<hash>/`` or ``unreadable-<time>/``), and training starts fresh. ``extra_state``
is stored, not compared: key ``checkpoint_dir`` by the stage's inputs (e.g. the dataset hash)
so that new data never resumes an old run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from hedge_pipeline.harness import distributed
from hedge_pipeline.harness.checkpoint import (
    CheckpointDir,
    CheckpointError,
    capture_rng_state,
    check_loadable,
    load_checkpoint,
    restore_rng_state,
    unreadable_folder_name,
)
from hedge_pipeline.harness.config import config_hash
from hedge_pipeline.harness.distributed import DistInfo
from hedge_pipeline.harness.monitor import TrainingDiverged, TrainingMonitor
from hedge_pipeline.harness.progress import HISTORY_KEYS, epoch_summary, start_message

__all__ = [
    "HISTORY_KEYS",
    "ConsoleReporter",
    "FitResult",
    "Reporter",
    "TrainConfig",
    "TrainTask",
    "TrainingDiverged",
    "TrainingInterrupted",
    "fit",
]

CHECKPOINT_FORMAT = 1
Schedule = Literal["plateau", "cosine", "none"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the loop (the model's own live in the stage).

    Attributes:
        grad_clip: max global gradient norm (None: no clipping; the norm is still recorded).
        grad_accum_steps: micro-batches per optimizer step; each micro-batch loss is divided
            by it, so 2 micro-batches of n/2 give the gradient of one batch of n. An epoch's
            last, shorter group also steps, with the mean gradient of its micro-batches.
        amp: autocast (bf16 if supported, else fp16 with a GradScaler); CUDA only.
        schedule: ``plateau`` halves the LR when val_loss has not improved (by min_delta)
            for more than ``max(1, patience // 2)`` epochs, so it acts before early stopping;
            ``cosine`` decays per epoch after ``warmup_epochs`` of linear warm-up; ``none``.
        patience, min_delta: early stopping once val_loss has not improved by more than
            ``min_delta`` for ``patience`` epochs.
        checkpoint_every: epochs between ``epoch-NNNN.pt`` snapshots (the newest 3 kept).
        device: ``auto``, ``cpu``, ``cuda`` (``cuda:LOCAL_RANK`` under torchrun) or ``cuda:N``.
        validate_initial: validate the untrained model first and let it compete as "epoch 0"
            for the best weights: for a model that starts at a known-good solution (a hedger
            initialized at the Black–Scholes hedge), so training can only be kept where it
            improved on the validation set.
        component_lr: ``(name, lr)`` per top-level child module of the model: each child is
            its own optimizer group at its own learning rate (a pre-trained part fine-tuned
            slower than a new one); every parameter must belong to a named child.
        clip_per_component: clip each component's gradient norm to ``grad_clip`` on its own,
            so one part's large gradient does not shrink the other's step.
    """

    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    amp: bool = True
    schedule: Schedule = "plateau"
    warmup_epochs: int = 0
    patience: int = 5
    min_delta: float = 0.0
    checkpoint_every: int = 1
    seed: int = 0
    device: str = "auto"
    validate_initial: bool = False
    component_lr: tuple[tuple[str, float], ...] = ()
    clip_per_component: bool = False

    def __post_init__(self) -> None:
        problems = [
            ("epochs must be ≥ 1", self.epochs >= 1),
            ("lr must be > 0", self.lr > 0),
            ("weight_decay must be ≥ 0", self.weight_decay >= 0),
            ("grad_clip must be > 0 or None", self.grad_clip is None or self.grad_clip > 0),
            ("grad_accum_steps must be ≥ 1", self.grad_accum_steps >= 1),
            ("schedule must be plateau, cosine or none", self.schedule in get_args(Schedule)),
            ("warmup_epochs must be ≥ 0", self.warmup_epochs >= 0),
            ("patience must be ≥ 1", self.patience >= 1),
            ("min_delta must be ≥ 0", self.min_delta >= 0),
            ("checkpoint_every must be ≥ 1", self.checkpoint_every >= 1),
        ]
        failed = [message for message, ok in problems if not ok]
        if failed:
            raise ValueError(f"invalid TrainConfig: {'; '.join(failed)}")

    def config_hash(self) -> str:
        """First 16 hex digits of the sha256 of the fields (stable across processes)."""
        return config_hash(asdict(self))


class TrainTask(Protocol):
    """What a model stage supplies to :func:`fit`."""

    def batches(self, epoch: int, rank: int, world_size: int) -> Iterable[Any]:
        """This rank's training batches for ``epoch``.

        Must be deterministic given ``(epoch, rank, world_size)``, shuffling with a generator
        seeded from the epoch rather than the global RNGs (resume re-draws the batches of an
        interrupted epoch and skips those already trained), and every rank must yield the
        same number of batches (DDP steps all ranks together).
        """
        ...

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """Mean loss of ``batch`` (moving the batch to ``device`` is the task's job).

        Called on the DDP wrapper under ``torchrun`` and under autocast with ``amp`` on CUDA.

        Shape:
            returns a scalar, ``()``; ``fit`` weights it by the batch's leading dimension
            (that of its first tensor) in the epoch's ``train_loss``.
        """
        ...

    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Validation metrics, ``val_loss`` included (called on rank 0, under ``no_grad``)."""
        ...


class Reporter(Protocol):
    """Where progress goes: the Dagster Pipes log in a child process, or stdout."""

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


class ConsoleReporter:
    """A :class:`Reporter` printing to stdout (runs by hand, notebooks)."""

    def info(self, message: str) -> None:
        print(message, flush=True)

    def warning(self, message: str) -> None:
        print(f"WARNING: {message}", flush=True)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Nothing: ``info`` already prints the epoch's summary line."""


class SilentReporter:
    """Reports nothing: ranks other than 0 (one voice per job), and benchmarks that train
    many models and print only their results."""

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


class TrainingInterrupted(RuntimeError):
    """SIGTERM/SIGINT stopped training after ``checkpoint`` was written.

    Attributes:
        epoch: the epoch that was running (complete if the signal came during validation).
        checkpoint: the ``last.pt`` to resume from (run the stage again).
    """

    def __init__(self, message: str, *, epoch: int, checkpoint: Path) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.checkpoint = checkpoint


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history`` has one row per epoch since epoch 1 (resumed runs included): ``epoch``,
    ``train_loss`` (sample-weighted mean over all ranks), ``val_loss``, ``lr`` (used during the
    epoch), ``grad_norm`` (mean pre-clip global norm over optimizer steps), ``train_val_ratio``,
    ``seconds`` (training + validation), ``samples_per_second`` (training, all ranks) and the
    task's other metrics.
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    start_epoch: int
    stopped: Literal["completed", "early_stopping"]
    device: str


def fit(
    model: nn.Module,
    task: TrainTask,
    config: TrainConfig,
    checkpoint_dir: Path,
    reporter: Reporter,
    *,
    extra_state: dict | None = None,
) -> FitResult:
    """Train ``model`` on ``task``, resuming from ``checkpoint_dir`` when it holds this run.

    The model is moved to the configured device and trained in place; it comes back holding
    the best epoch's weights, in eval mode.

    ``extra_state`` (e.g. the dataset hash and the model's constructor arguments) is stored in
    every checkpoint, so ``best.pt`` alone can rebuild the model; it must be weights_only-safe
    (tensors, numbers, strings and containers), which is checked before training starts.

    Raises:
        TrainingDiverged: NaN/inf loss, gradient norm or val_loss (the message names the
            epoch, batch and LR); no checkpoint of that epoch is written.
        TrainingInterrupted: SIGTERM/SIGINT, after ``last.pt`` was written.
    """
    extra_state = dict(extra_state or {})
    check_loadable(extra_state, "extra_state")
    info = distributed.init_distributed()
    reporter = reporter if info.is_main else SilentReporter()
    _seed_everything(config.seed + info.rank)
    run = _Run.create(model, config, info, reporter, extra_state)
    checkpoints = CheckpointDir(Path(checkpoint_dir))
    progress = _resume(run, checkpoints)
    start_epoch = progress.epoch + 1
    stopped: Literal["completed", "early_stopping"] = "completed"
    reporter.info(_start_message(run, progress))
    if config.validate_initial and progress.epoch == 0 and progress.batches_done == 0:
        initial = _evaluate(run, task)["val_loss"]
        if not math.isfinite(initial):
            raise TrainingDiverged(f"the untrained model's val_loss is {initial}")
        progress.best_val_loss, progress.best_epoch = initial, 0
        _save(run, checkpoints, progress, best=True)
        reporter.info(f"epoch 0 (untrained): val_loss={initial:.4g}, the result to beat")

    with _SignalFlag() as signals:
        for epoch in range(start_epoch, config.epochs + 1):
            if progress.stale_epochs >= config.patience:
                stopped = "early_stopping"
                reporter.info(_early_stop_message(progress, config))
                break
            lr = run.lr
            stats = _train_epoch(run, task, epoch, progress, signals)
            if stats is None:  # a signal: progress holds the position inside this epoch
                _save(run, checkpoints, progress)
                raise _interrupted(checkpoints, progress, epoch, signals)
            validation_started = time.perf_counter()
            metrics = _evaluate(run, task)
            validation_seconds = time.perf_counter() - validation_started
            row = _epoch_row(epoch, stats, metrics, lr, validation_seconds, run.device)
            improved = progress.record(row, config.min_delta)
            run.monitor.check_epoch(progress.history, progress.stale_epochs)
            run.monitor.check_memory()
            run.step_schedule(row["val_loss"])
            periodic = epoch if epoch % config.checkpoint_every == 0 else None
            _save(run, checkpoints, progress, best=improved, periodic_epoch=periodic)
            reporter.epoch(epoch, row)
            reporter.info(epoch_summary(row, config.epochs, improved))
            if distributed.any_rank(signals.requested, run.device):
                raise _interrupted(checkpoints, progress, epoch, signals)

    distributed.barrier()  # rank 0 has written best.pt
    model.load_state_dict(load_checkpoint(checkpoints.best)["model"])
    model.eval()
    return FitResult(
        model=model,
        history=progress.history,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val_loss,
        start_epoch=start_epoch,
        stopped=stopped,
        device=str(run.device),
    )


@dataclass
class _EpochStats:
    """Running sums over this rank's training steps of one epoch."""

    loss_sum: float = 0.0  # Σ loss × samples
    samples: int = 0
    grad_norm_sum: float = 0.0
    grad_norm_steps: int = 0  # steps with a finite norm (fp16 overflow steps are skipped)
    seconds: float = 0.0

    def add_step(self, losses: Sequence[float], sizes: Sequence[int], grad_norm: float) -> None:
        self.loss_sum += sum(loss * size for loss, size in zip(losses, sizes, strict=True))
        self.samples += sum(sizes)
        if math.isfinite(grad_norm):
            self.grad_norm_sum += grad_norm
            self.grad_norm_steps += 1


@dataclass
class _Progress:
    """Where the run stands. Saved flat in every checkpoint (``partial`` per rank)."""

    epoch: int = 0  # the last completed epoch
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    stale_epochs: int = 0  # epochs since val_loss last improved by more than min_delta
    batches_done: int = 0  # micro-batches of epoch + 1 trained before a signal stopped it
    partial: _EpochStats | None = None  # this rank's sums over those batches

    def record(self, row: dict[str, float], min_delta: float) -> bool:
        """Append a finished epoch; True if its val_loss is a new best by more than min_delta."""
        self.epoch = int(row["epoch"])
        self.history.append(row)
        improved = row["val_loss"] < self.best_val_loss - min_delta
        if improved:
            self.best_val_loss, self.best_epoch, self.stale_epochs = row["val_loss"], self.epoch, 0
        else:
            self.stale_epochs += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        del state["partial"]
        return state


@dataclass
class _Run:
    """The live objects of one run, and their checkpoint state."""

    config: TrainConfig
    info: DistInfo
    device: torch.device
    model: nn.Module  # the caller's module
    module: nn.Module  # what the loss calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | ReduceLROnPlateau
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    monitor: TrainingMonitor
    reporter: Reporter
    extra_state: dict[str, Any]

    @classmethod
    def create(
        cls,
        model: nn.Module,
        config: TrainConfig,
        info: DistInfo,
        reporter: Reporter,
        extra_state: dict[str, Any],
    ) -> _Run:
        device = distributed.resolve_device(config.device)
        model.to(device)
        module = model
        if info.world_size > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            module = DistributedDataParallel(model, device_ids=device_ids)
        optimizer = torch.optim.AdamW(
            _parameter_groups(model, config), lr=config.lr, weight_decay=config.weight_decay
        )
        amp_dtype = _amp_dtype(device, config.amp)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        return cls(
            config=config,
            info=info,
            device=device,
            model=model,
            module=module,
            optimizer=optimizer,
            scheduler=_make_scheduler(optimizer, config),
            amp_dtype=amp_dtype,
            scaler=scaler,
            monitor=TrainingMonitor(reporter, config.patience, device, scaler.is_enabled()),
            reporter=reporter,
            extra_state=extra_state,
        )

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def sync_gradients(self, now: bool) -> AbstractContextManager[Any]:
        """DDP all-reduces gradients in backward: only on the micro-batch that steps."""
        if now or not isinstance(self.module, DistributedDataParallel):
            return nullcontext()
        return self.module.no_sync()

    def optimizer_step(
        self, pending: list[tuple[int, torch.Tensor, int]], stats: _EpochStats, epoch: int
    ) -> None:
        """Check, clip and apply the accumulated gradients of ``pending`` micro-batches.

        ``pending`` holds ``(batch number, detached loss, samples)``; the losses and the norm
        come to the host in one transfer, the only device sync of the step.
        """
        self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.model.parameters() if p.grad is not None]
        accum = self.config.grad_accum_steps
        if len(pending) < accum:  # the epoch's last group is short: mean over what it has
            for parameter in parameters:
                parameter.grad.mul_(accum / len(pending))
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        *losses, grad_norm = torch.stack([loss.float() for _, loss, _ in pending] + [norm]).tolist()
        numbered = [(number, loss) for (number, _, _), loss in zip(pending, losses, strict=True)]
        self.monitor.check_step(numbered, grad_norm, epoch, self.lr)
        if self.config.grad_clip is not None and self.config.clip_per_component:
            for group in self.optimizer.param_groups:
                grads = [p.grad for p in group["params"] if p.grad is not None]
                if grads:
                    torch.nn.utils.clip_grad_norm_(grads, self.config.grad_clip)
        elif self.config.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(parameters, self.config.grad_clip, norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        stats.add_step(losses, [size for _, _, size in pending], grad_norm)

    def step_schedule(self, val_loss: float) -> None:
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    @property
    def model_signature(self) -> str:
        """Hash of parameter and buffer names, shapes and dtypes: which weights fit."""
        layout = [(k, list(v.shape), str(v.dtype)) for k, v in self.model.state_dict().items()]
        return hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16]

    def state_dict(self, progress: _Progress) -> dict[str, Any]:
        """The checkpoint (a collective: every rank contributes its RNG and partial sums)."""
        partial = asdict(progress.partial) if progress.partial else None
        ranks = distributed.gather_objects({"rng": capture_rng_state(), "partial": partial})
        return {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.config.config_hash(),
            "model_signature": self.model_signature,
            "world_size": self.info.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "monitor": self.monitor.state_dict(),
            **progress.state_dict(),
            "ranks": ranks,
            "extra_state": self.extra_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> _Progress:
        """Restore a checkpoint of this run; returns its progress."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when written without fp16 scaling
            self.scaler.load_state_dict(state["scaler"])
        self.monitor.load_state_dict(state["monitor"])
        progress = _Progress(**{k: state[k] for k in _Progress().state_dict()})
        if state["world_size"] != self.info.world_size:
            self.reporter.warning(
                f"checkpoint written by {state['world_size']} processes, resumed by "
                f"{self.info.world_size}: RNG streams restart from the seed"
                + (" and the interrupted epoch is trained in full" if progress.batches_done else "")
            )
            progress.batches_done = 0
            return progress
        mine = state["ranks"][self.info.rank]
        restore_rng_state(mine["rng"])
        progress.partial = _EpochStats(**mine["partial"]) if mine["partial"] else None
        return progress


def _train_epoch(
    run: _Run, task: TrainTask, epoch: int, progress: _Progress, signals: _SignalFlag
) -> _EpochStats | None:
    """One pass over this rank's batches of ``epoch``, stepping every ``grad_accum_steps``.

    Continues after the ``progress.batches_done`` micro-batches a signal interrupted earlier.
    Returns the epoch's running sums, or None when a signal stopped it at a step boundary:
    ``progress`` then holds the position and the partial sums for the checkpoint.
    """
    stats, skip = progress.partial or _EpochStats(), progress.batches_done
    progress.partial, progress.batches_done = None, 0
    accum = run.config.grad_accum_steps
    run.module.train()
    started = time.perf_counter()
    pending: list[tuple[int, torch.Tensor, int]] = []  # micro-batches since the last step
    batches = itertools.islice(task.batches(epoch, run.info.rank, run.info.world_size), skip, None)
    for index, (batch, is_last) in enumerate(_mark_last(batches), start=skip):
        step_now = is_last or (index + 1) % accum == 0
        with run.sync_gradients(step_now):
            with run.autocast():
                loss = task.loss(run.module, batch, run.device)
            run.scaler.scale(loss / accum).backward()
        pending.append((index + 1, loss.detach(), _batch_size(batch)))
        if not step_now:
            continue
        run.optimizer_step(pending, stats, epoch)
        pending = []
        if not is_last and distributed.any_rank(signals.requested, run.device):
            stats.seconds += time.perf_counter() - started
            progress.batches_done, progress.partial = index + 1, stats
            return None
    if not stats.samples:
        raise ValueError(
            f"task.batches yielded no samples for epoch {epoch} on rank {run.info.rank}"
        )
    stats.seconds += time.perf_counter() - started
    return stats


def _evaluate(run: _Run, task: TrainTask) -> dict[str, float]:
    """Validation metrics from rank 0, sent to every rank.

    Every rank then steps the LR schedule and takes the early-stopping decision on the same
    numbers, so all ranks stop together without a separate vote.
    """
    metrics = None
    if run.info.is_main:
        run.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in task.evaluate(run.model, run.device).items()}
        if "val_loss" not in metrics:
            raise ValueError(f"task.evaluate must return 'val_loss'; got {sorted(metrics)}")
    return distributed.broadcast_from_main(metrics)


def _epoch_row(
    epoch: int,
    stats: _EpochStats,
    metrics: dict[str, float],
    lr: float,
    validation_seconds: float,
    device: torch.device,
) -> dict[str, float]:
    """The history row of an epoch, its training sums added up over all ranks."""
    loss_sum, samples, norm_sum, norm_steps = distributed.sum_across_ranks(
        [stats.loss_sum, stats.samples, stats.grad_norm_sum, stats.grad_norm_steps], device
    )
    train_loss = loss_sum / samples if samples else math.nan
    val_loss = metrics["val_loss"]
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "lr": lr,
        "grad_norm": norm_sum / norm_steps if norm_steps else math.nan,
        "train_val_ratio": train_loss / val_loss if val_loss else math.nan,
        "seconds": stats.seconds + validation_seconds,
        "samples_per_second": samples / stats.seconds if stats.seconds > 0 else math.nan,
    }
    return row | {k: v for k, v in metrics.items() if k not in HISTORY_KEYS}


def _resume(run: _Run, checkpoints: CheckpointDir) -> _Progress:
    """The progress of ``last.pt`` if it belongs to this run; else set old files aside."""
    state, problem = _read_resumable(run, checkpoints.last)
    distributed.barrier()  # every rank has read last.pt before rank 0 moves it
    if state is not None:
        return run.load_state_dict(state)
    if problem is not None and run.info.is_main:
        folder, reason = problem
        moved_to = checkpoints.move_aside(folder)
        run.reporter.warning(
            f"not resuming from {checkpoints.last}: {reason}; starting fresh "
            f"(old checkpoints moved to {moved_to})"
        )
    return _Progress()


def _read_resumable(run: _Run, path: Path) -> tuple[dict | None, tuple[str, str] | None]:
    """``(state, None)`` to resume, ``(None, (folder, reason))`` to set aside, or neither."""
    if not path.exists():
        return None, None
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        return None, (unreadable_folder_name(), str(exc))
    if state.get("format") != CHECKPOINT_FORMAT:
        return None, (unreadable_folder_name(), f"unknown format {state.get('format')!r}")
    old_hash, new_hash = state["config_hash"], run.config.config_hash()
    if old_hash != new_hash:
        return None, (f"stale-{old_hash}", f"its config_hash {old_hash} is not {new_hash}")
    old_model, new_model = state["model_signature"], run.model_signature
    if old_model != new_model:
        return None, (f"stale-{old_model}", "it holds a model of other parameter shapes")
    return state, None


def _save(
    run: _Run,
    checkpoints: CheckpointDir,
    progress: _Progress,
    *,
    best: bool = False,
    periodic_epoch: int | None = None,
) -> None:
    state = run.state_dict(progress)
    if run.info.is_main:
        checkpoints.save(state, best=best, periodic_epoch=periodic_epoch)


def _interrupted(
    checkpoints: CheckpointDir, progress: _Progress, epoch: int, signals: _SignalFlag
) -> TrainingInterrupted:
    """The exception to raise once ``last.pt`` holds the position where the loop stopped."""
    distributed.barrier()  # no rank exits before rank 0 has written last.pt
    where = f"after {progress.batches_done} batches of epoch {epoch}"
    if not progress.batches_done:
        where = f"at the end of epoch {epoch}"
    return TrainingInterrupted(
        f"training interrupted by {signals.name} {where}; state saved to {checkpoints.last} "
        "(run the stage again to resume)",
        epoch=epoch,
        checkpoint=checkpoints.last,
    )


class _SignalFlag:
    """SIGTERM/SIGINT set a flag the loop polls at step boundaries, instead of killing it.

    The loop can then stop where its state is consistent and checkpoint. Handlers are
    installed only in the main thread (Python allows no other) and restored on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        if self.signum is None:
            return "a signal to another rank"
        return signal.Signals(self.signum).name

    def __enter__(self) -> _SignalFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: object) -> None:
        self.signum = signum


def _parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """One optimizer group, or one per component named in ``config.component_lr``."""
    if not config.component_lr:
        return [{"params": list(model.parameters())}]
    children = dict(model.named_children())
    rates = dict(config.component_lr)
    unknown = sorted(set(rates) - set(children))
    if unknown:
        raise ValueError(f"component_lr names {unknown}; the model's children: {sorted(children)}")
    groups = [
        {"params": list(children[name].parameters()), "lr": lr, "name": name}
        for name, lr in config.component_lr
    ]
    covered = {id(p) for group in groups for p in group["params"]}
    missing = [name for name, p in model.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"component_lr leaves parameters without a learning rate: {missing}")
    return groups


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> LRScheduler | ReduceLROnPlateau:
    """Per-epoch LR schedule (stepped after validation)."""
    if config.schedule == "plateau":
        return ReduceLROnPlateau(
            optimizer,
            factor=0.5,
            patience=max(1, config.patience // 2),
            threshold=config.min_delta,
            threshold_mode="abs",
        )
    if config.schedule == "cosine":
        return LambdaLR(
            optimizer, partial(_warmup_cosine, warmup=config.warmup_epochs, total=config.epochs)
        )
    return LambdaLR(optimizer, _constant)


def _warmup_cosine(completed: int, warmup: int, total: int) -> float:
    """LR factor of the epoch after ``completed`` ones.

    Warm-up epochs ramp linearly (1/(w+1), ..., w/(w+1)); cosine then decays from 1 without
    reaching 0 on the last epoch (which would waste it).
    """
    if completed < warmup:
        return (completed + 1) / (warmup + 1)
    progress = (completed - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _constant(completed: int) -> float:
    return 1.0


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """bf16 where the GPU has it (no loss scaling needed), else fp16; None off CUDA."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _mark_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """``(item, is_last)``: the loop must step (and DDP sync) on the last batch."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the leading dimension of its first tensor (1 if it has none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        return next((_batch_size(item) for item in batch if _has_tensor(item)), 1)
    return 1


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, Mapping):
        value = list(value.values())
    return isinstance(value, list | tuple) and any(_has_tensor(v) for v in value)


def _start_message(run: _Run, progress: _Progress) -> str:
    where = "from scratch"
    if progress.epoch or progress.batches_done:
        where = f"resuming after epoch {progress.epoch}"
        if progress.batches_done:
            where += f" and {progress.batches_done} batches of epoch {progress.epoch + 1}"
    precision = str(run.amp_dtype).removeprefix("torch.") if run.amp_dtype else "fp32"
    return start_message(
        where, str(run.device), precision, run.info.world_size, run.config.config_hash()
    )


def _early_stop_message(progress: _Progress, config: TrainConfig) -> str:
    return (
        f"early stopping: val_loss has not improved by more than {config.min_delta:g} for "
        f"{progress.stale_epochs} epochs (best {progress.best_val_loss:.4g} at epoch "
        f"{progress.best_epoch})"
    )
