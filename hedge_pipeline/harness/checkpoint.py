"""Atomic, checksummed training checkpoints.

Training children are killed without warning (preemption, OOM killer, a cancelled Dagster run),
so a checkpoint must never be half-written. Each file is written as ``<name>.tmp``, fsynced and
``os.replace``d over ``<name>`` (the directory is fsynced too, so the rename survives a power
cut): at any instant the path holds either the previous complete file or the new one. A sidecar
``<name>.sha256`` (``sha256sum`` format) records the digest, verified on load, so a truncated or
bit-flipped file is reported as such instead of being unpickled into garbage.

Files load with ``torch.load(weights_only=True)``, so opening one runs no pickled code: a
checkpoint holds only tensors, numbers, strings and containers of them (the NumPy RNG state is
stored as a list for that reason).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKSUM_SUFFIX = ".sha256"
PENDING_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted: missing, checksum mismatch, or not loadable."""


def save_checkpoint(state: Mapping[str, Any], *paths: Path) -> None:
    """Serialize ``state`` once and write it atomically, with its sidecar, to every path."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    for path in paths:
        _write_atomic(path, data, digest)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify ``path`` against its sidecar and load it onto the CPU.

    Raises:
        CheckpointError: the file or its sidecar is missing, the digest differs, or the bytes
            do not unpickle (with ``weights_only=True``) into a dict. The message says which.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    recorded = _recorded_digests(path)
    if not recorded:
        raise CheckpointError(f"{path} has no checksum file {_sidecar(path).name}")
    if digest not in recorded:
        raise CheckpointError(
            f"{path} fails its sha256 check (file {digest[:12]}…, recorded "
            f"{', '.join(d[:12] + '…' for d in sorted(recorded))}): truncated or corrupted"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means the same thing: unusable file
        raise CheckpointError(f"{path} cannot be unpickled: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def check_loadable(value: Any, name: str) -> None:
    """Fail fast if ``value`` would make checkpoints unloadable with ``weights_only=True``.

    Found at save time, a bad type would only surface at the next resume, as an "unreadable
    checkpoint" warning and a silent fresh start; here it is a ``TypeError`` naming the value.
    """
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except Exception as exc:
        raise TypeError(
            f"{name} must hold only tensors, numbers, strings, None and lists, tuples or dicts "
            f"of them, so checkpoints load with torch.load(weights_only=True): {exc}"
        ) from exc


class CheckpointDir:
    """The checkpoint files of one training run.

    ``last.pt`` (the newest resumable state), ``best.pt`` (the state at the best validation
    loss) and ``epoch-NNNN.pt`` (periodic snapshots, the newest ``keep_periodic`` kept).
    """

    def __init__(self, root: Path, keep_periodic: int = 3) -> None:
        self.root = root
        self.keep_periodic = keep_periodic
        self.last = root / "last.pt"
        self.best = root / "best.pt"

    def periodic(self, epoch: int) -> Path:
        return self.root / f"epoch-{epoch:04d}.pt"

    def save(
        self, state: Mapping[str, Any], *, best: bool = False, periodic_epoch: int | None = None
    ) -> None:
        """Write ``last.pt`` and, if asked, ``best.pt`` and ``epoch-NNNN.pt``.

        ``last.pt`` goes last: a crash in between leaves it at the previous epoch, which a
        resume simply trains again, rather than pointing at files that were never written.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        paths = [self.periodic(periodic_epoch)] if periodic_epoch is not None else []
        paths += [self.best] if best else []
        save_checkpoint(state, *paths, self.last)
        self._prune_periodic()

    def move_aside(self, folder: str) -> Path:
        """Move this run's files into ``root/folder`` (kept for inspection, never deleted)."""
        target = self.root / folder
        target.mkdir(parents=True, exist_ok=True)
        for path in self.root.iterdir():
            if path.is_file() and path.name.endswith((".pt", CHECKSUM_SUFFIX, PENDING_SUFFIX)):
                os.replace(path, target / path.name)
        return target

    def _prune_periodic(self) -> None:
        snapshots = sorted(self.root.glob("epoch-*.pt"), key=lambda p: int(p.stem[len("epoch-") :]))
        for path in snapshots[: -self.keep_periodic]:
            _sidecar(path).unlink(missing_ok=True)
            path.unlink()


def unreadable_folder_name() -> str:
    """Where unusable checkpoints go: ``unreadable-<UTC time>``, so repeated failures stay apart."""
    return "unreadable-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and, if present, CUDA) RNG states, weights_only-safe."""
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def _pending(path: Path) -> Path:
    return path.with_name(path.name + PENDING_SUFFIX)


def _write_atomic(path: Path, data: bytes, digest: str) -> None:
    """Both files go to ``.tmp`` first; a kill between the two renames is repaired on load."""
    sidecar = _sidecar(path)
    _write_synced(_pending(sidecar), f"{digest}  {path.name}\n".encode())
    _write_synced(_pending(path), data)
    os.replace(_pending(path), path)
    os.replace(_pending(sidecar), sidecar)
    _fsync_directory(path.parent)


def _recorded_digests(path: Path) -> set[str]:
    """The sidecar's digest, plus a pending sidecar's.

    A writer killed between its two renames leaves the new data next to the old sidecar, with
    the new sidecar still at ``.sha256.tmp``: that file is complete (it was fsynced before the
    data was renamed), so accepting its digest turns a would-be false alarm into a valid load.
    """
    digests = set()
    for candidate in (_sidecar(path), _pending(_sidecar(path))):
        try:
            digests.update(candidate.read_text(encoding="utf-8").split()[:1])
        except FileNotFoundError:  # absent, or renamed by a writer as we looked
            continue
    return digests


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
