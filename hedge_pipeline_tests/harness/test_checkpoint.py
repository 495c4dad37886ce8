"""Atomic, checksummed checkpoint files."""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from hedge_pipeline.harness.checkpoint import (
    CheckpointDir,
    CheckpointError,
    capture_rng_state,
    check_loadable,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class _Evil:
    """Pickles as a call to ``print``: code that would run on an unrestricted load."""

    def __reduce__(self):
        return (print, ("pwned",))


STATE = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "history": [{"a": 1.0}]}


def test_round_trip_with_sha256sum_compatible_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(STATE, path)

    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["w"], STATE["model"]["w"])
    assert (loaded["epoch"], loaded["history"]) == (3, [{"a": 1.0}])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "last.pt.sha256").read_text() == f"{digest}  last.pt\n"
    check = subprocess.run(["sha256sum", "-c", "last.pt.sha256"], cwd=tmp_path, check=False)
    assert check.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "last.pt.sha256"]  # no .tmp


def test_one_serialization_written_to_several_paths(tmp_path: Path) -> None:
    paths = [tmp_path / "best.pt", tmp_path / "last.pt"]
    save_checkpoint(STATE, *paths)
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "fails its sha256 check"),
        (lambda p: p.write_bytes(b"\x00" + p.read_bytes()[1:]), "fails its sha256 check"),
        (lambda p: p.with_name("last.pt.sha256").unlink(), "has no checksum file"),
        (lambda p: p.unlink(), "cannot be read"),
    ],
)
def test_damaged_file_raises_checkpoint_error(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(STATE, path)
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def _write_with_sidecar(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {path.name}\n"
    )


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"garbage", "cannot be unpickled"),
        # weights_only: an arbitrary object is refused, its pickled code never runs.
        (_torch_bytes({"obj": _Evil()}), "cannot be unpickled"),
        (_torch_bytes([1, 2]), "holds a list, not a checkpoint dict"),
    ],
)
def test_intact_but_unusable_content_raises(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "last.pt"
    _write_with_sidecar(path, data)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_writer_killed_between_renames_still_loads(tmp_path: Path) -> None:
    """New data renamed in, new sidecar still pending: the pending digest is accepted."""
    path = tmp_path / "last.pt"
    save_checkpoint(STATE, path)
    old_sidecar = (tmp_path / "last.pt.sha256").read_text()
    save_checkpoint({**STATE, "epoch": 4}, path)
    pending = tmp_path / "last.pt.sha256.tmp"
    (tmp_path / "last.pt.sha256").rename(pending)
    (tmp_path / "last.pt.sha256").write_text(old_sidecar)
    assert load_checkpoint(path)["epoch"] == 4


def test_checkpoint_dir_keeps_latest_three_periodic(tmp_path: Path) -> None:
    checkpoints = CheckpointDir(tmp_path)
    for epoch in range(1, 12):
        checkpoints.save({"epoch": epoch}, best=epoch == 2, periodic_epoch=epoch)
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert names == ["best.pt", "epoch-0009.pt", "epoch-0010.pt", "epoch-0011.pt", "last.pt"]
    assert len(list(tmp_path.glob("*.sha256"))) == 5
    assert load_checkpoint(checkpoints.best)["epoch"] == 2
    assert load_checkpoint(checkpoints.last)["epoch"] == 11


def test_periodic_pruning_orders_by_number_past_9999(tmp_path: Path) -> None:
    checkpoints = CheckpointDir(tmp_path)
    for epoch in (9998, 9999, 10000, 10001):
        checkpoints.save({"epoch": epoch}, periodic_epoch=epoch)
    assert sorted(p.name for p in tmp_path.glob("epoch-*.pt")) == [
        "epoch-10000.pt", "epoch-10001.pt", "epoch-9999.pt",
    ]  # fmt: skip


def test_move_aside_moves_files_only(tmp_path: Path) -> None:
    checkpoints = CheckpointDir(tmp_path)
    checkpoints.save({"epoch": 1}, best=True, periodic_epoch=1)
    (tmp_path / "last.pt.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "stale-old").mkdir()

    target = checkpoints.move_aside("stale-abc")
    assert target == tmp_path / "stale-abc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "stale-abc", "stale-old"]
    assert load_checkpoint(target / "best.pt")["epoch"] == 1
    assert (target / "last.pt.tmp").exists()


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's legacy state
    save_checkpoint({"rng": capture_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))

    random.seed(2)
    np.random.seed(2)
    torch.manual_seed(2)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    actual = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert actual[:2] == expected[:2]
    torch.testing.assert_close(actual[2], expected[2], atol=0, rtol=0)


def test_check_loadable() -> None:
    check_loadable({"a": torch.ones(2), "b": [1, "x", None, (2.0,)]}, "extra_state")
    with pytest.raises(TypeError, match="extra_state must hold only tensors"):
        check_loadable({"a": np.ones(2)}, "extra_state")
