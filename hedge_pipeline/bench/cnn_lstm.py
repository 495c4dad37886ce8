"""Training throughput of the CNN-LSTM market-state model (``hedge bench cnn-lstm``).

Samples per second of one training step (forward, MSE backward, AdamW step) on a random
batch, the median over ``steps`` steps after ``warmup`` untimed ones, on the CPU with
``threads`` threads and on CUDA when there is one. Three models run side by side, their steps
interleaved (one step of each in turn), so that load from other processes on a shared machine
slows them alike and their ratios stay meaningful:

* ``ours_default``: ``CnnLstm`` at its default size (2 residual conv blocks of 32 channels,
  bidirectional LSTM 64, 4-head self-attention, 32-dim embedding);
* ``ours_reference_size``: ``CnnLstm`` at the notes' sizes (convs 64, LSTM 128 × 2,
  unidirectional, no attention), to see what its LayerNorm, residuals and pooling cost;
* ``notes_reference``: the plain network of docs/notes.md, Training throughput (Conv1d × 2
  64ch → LSTM 128 × 2 → 32-dim embedding), measured there at 737–767 samples/s on 2 threads.

``run()`` returns a JSON-serialisable dict.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.harness.threads import torch_threads
from hedge_pipeline.stages.cnn_lstm.model import CnnLstm, CnnLstmConfig

NOTES_SAMPLES_PER_S = (737, 767)
N_TARGETS = 2


class NotesReference(nn.Module):
    """The notes' CNN-LSTM: two ReLU convs, a 2-layer LSTM, its last hidden state → embedding.

    Shape:
        - Input: (B, T, F)
        - Output: (B, 2)
    """

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(n_features, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(64, 64, 3, padding=1),
            nn.ReLU(),
        )
        self.lstm = nn.LSTM(64, 128, num_layers=2, batch_first=True)
        self.embedding = nn.Sequential(nn.Linear(128, 32), nn.ReLU())
        self.head = nn.Linear(32, N_TARGETS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.convs(x.transpose(1, 2)).transpose(1, 2))
        return self.head(self.embedding(h[:, -1]))


def models(n_features: int, sequence_length: int) -> dict[str, Callable[[], nn.Module]]:
    """The benchmarked networks, by name (built fresh per device)."""
    return {
        "ours_default": lambda: CnnLstm(
            CnnLstmConfig(n_features=n_features, sequence_length=sequence_length)
        ),
        "ours_reference_size": lambda: CnnLstm(
            CnnLstmConfig(
                n_features=n_features,
                sequence_length=sequence_length,
                conv_channels=64,
                lstm_hidden=128,
                lstm_layers=2,
                bidirectional=False,
                attention_heads=0,
            )
        ),
        "notes_reference": lambda: NotesReference(n_features),
    }


def run(
    batch_size: int = 256,
    sequence_length: int = 100,
    n_features: int = 20,
    steps: int = 30,
    threads: int = 2,
    compile: bool = False,
    warmup: int = 3,
) -> dict:
    """Run the suite; a JSON-serialisable report (see the module docstring)."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    shape = (batch_size, sequence_length, n_features)
    with torch_threads(threads):
        results = {
            device: _interleaved(
                models(n_features, sequence_length),
                torch.device(device),
                shape,
                steps,
                warmup,
                compile,
            )
            for device in devices
        }
    cpu = results["cpu"]
    return {
        "suite": "cnn_lstm",
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "machine": machine_info("numpy", "torch")
        | {
            "torch": torch.__version__,
            "torch_threads": threads,
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_1m": os.getloadavg()[0],
        },
        "config": {
            "batch_size": batch_size,
            "sequence_length": sequence_length,
            "n_features": n_features,
            "steps": steps,
            "warmup": warmup,
            "compile": compile,
            "step": "forward + MSE backward + AdamW step, fp32, random data",
        },
        "results": results,
        "notes_reference_samples_per_s": list(NOTES_SAMPLES_PER_S),
        "ratio_ours_default_over_notes_reference_cpu": (
            cpu["ours_default"]["samples_per_s"] / cpu["notes_reference"]["samples_per_s"]
        ),
    }


class _TrainingStep:
    """One model's training step on a fixed random batch; calling it returns its seconds."""

    def __init__(
        self, model: nn.Module, device: torch.device, shape: tuple[int, int, int], compile: bool
    ) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(*shape, generator=generator).to(device)
        self.y = torch.randn(shape[0], N_TARGETS, generator=generator).to(device)
        self.model = model.to(device).train()
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.device = device

    def __call__(self) -> float:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        F.mse_loss(self.forward(self.x), self.y).backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started


def _interleaved(
    builders: dict[str, Callable[[], nn.Module]],
    device: torch.device,
    shape: tuple[int, int, int],
    steps: int,
    warmup: int,
    compile: bool,
) -> dict[str, dict]:
    """Time the models' steps in turn on one device; per model, its throughput summary."""
    trainers = {
        name: _TrainingStep(build(), device, shape, compile) for name, build in builders.items()
    }
    first = {name: step() for name, step in trainers.items()}  # compiles when compile=True
    for _ in range(warmup - 1):
        for step in trainers.values():
            step()
    times = {name: [] for name in trainers}
    for _ in range(max(steps, 1)):
        for name, step in trainers.items():
            times[name].append(step())
    batch = shape[0]
    return {
        name: {
            "parameters": sum(p.numel() for p in trainers[name].model.parameters()),
            "samples_per_s": batch / float(np.median(seconds)),
            "samples_per_s_best": batch / min(seconds),
            "step_ms_median": 1e3 * float(np.median(seconds)),
            "first_step_s": first[name],
        }
        for name, seconds in times.items()
    }
