"""DDP helpers, and ``fit`` under ``torchrun`` with 2 CPU processes (gloo).

Also the worker
``torchrun ... -m hedge_pipeline_tests.harness.test_distributed OUT CHECKPOINT_DIR``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from hedge_pipeline.harness import distributed
from hedge_pipeline.harness.checkpoint import load_checkpoint
from hedge_pipeline.harness.distributed import DistInfo, init_distributed, resolve_device
from hedge_pipeline.harness.trainer import ConsoleReporter, FitResult, TrainConfig, fit
from hedge_pipeline_tests.harness.test_trainer import LinearTask, make_model, run_fit

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = TrainConfig(epochs=5, lr=0.05, patience=5)
ATOL = 1e-5


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed() == DistInfo(rank=0, local_rank=0, world_size=1, backend=None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with distributed.distributed() as info:
        assert info.is_main and info.world_size == 1
    device = torch.device("cpu")
    assert distributed.any_rank(True, device) and not distributed.any_rank(False, device)
    assert distributed.sum_across_ranks([1.0, 2.0], device) == [1.0, 2.0]
    assert distributed.broadcast_from_main({"val_loss": 1.0}) == {"val_loss": 1.0}
    assert distributed.gather_objects("x") == ["x"]
    distributed.barrier()


def test_the_launched_world_size_is_torchruns_without_a_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets, before any init_process_group
    assert distributed.launched_world_size() == 2


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)  # torchrun: one GPU per rank
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # explicit wins


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "hedge_pipeline_tests.harness.test_distributed", str(tmp_path / "out.pt"),
        str(tmp_path / "checkpoints"), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _assert_matches_single_process(out: dict, single: FitResult) -> None:
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(out["weights"][name], value, atol=ATOL, rtol=0, msg=name)
    for ddp_row, row in zip(out["history"], single.history, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm", "lr"):
            assert ddp_row[key] == pytest.approx(row[key], rel=1e-4), key


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> FitResult:
    """One process, global batch 32: what two ranks of 16 each must reproduce."""
    return run_fit(tmp_path_factory.mktemp("single"), LinearTask(batch_size=32), CONFIG)


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path: Path, single: FitResult) -> None:
    done = _torchrun(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["info"] == {"rank": 0, "local_rank": 0, "world_size": 2, "backend": "gloo"}
    assert out["start_epoch"] == 1
    _assert_matches_single_process(out, single)
    summaries = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert len(summaries) == CONFIG.epochs  # rank 0 alone reports
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["world_size"] == 2


@pytest.mark.slow
def test_ddp_signal_on_one_rank_stops_both_and_resumes_exactly(
    tmp_path: Path, single: FitResult
) -> None:
    interrupted = _torchrun(tmp_path, "--sigterm-rank-1-at", "3", "4")
    assert interrupted.returncode != 0
    assert "interrupted by a signal to another rank after 3 batches of epoch 3" in (
        interrupted.stderr
    )
    saved = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["batches_done"], len(saved["ranks"])) == (2, 3, 2)

    resumed = _torchrun(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["start_epoch"] == 3
    _assert_matches_single_process(out, single)


def main() -> None:
    """A ``torchrun`` worker: fit the linear task on this rank's half of every batch."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--sigterm-rank-1-at", type=int, nargs=2)
    args = parser.parse_args()
    with distributed.distributed() as info:
        signal_at = args.sigterm_rank_1_at if info.rank == 1 else None
        task = LinearTask(batch_size=32, sigterm_at=tuple(signal_at) if signal_at else None)
        result = fit(make_model(), task, CONFIG, args.checkpoint_dir, ConsoleReporter())
        if info.is_main:
            out = {
                "weights": result.model.state_dict(),
                "history": result.history,
                "start_epoch": result.start_epoch,
                "info": asdict(info),
            }
            torch.save(out, args.out)


if __name__ == "__main__":
    main()
