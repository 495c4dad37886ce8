"""Shared pieces of the reliability tests: a market-data warehouse built once, and the tools to
find and kill a training child at a known point of its training.

The warehouse (two synthetic codes and the ``atm_book`` selection) is materialized through
Dagster once per session, in a data directory of its own, and copied into each test's data
directory: the training assets only read it, and a copy costs milliseconds where the three
materializations cost seconds.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from hedge_pipeline.harness.checkpoint import CheckpointError, load_checkpoint
from hedge_pipeline.registry import versions as registry
from hedge_pipeline.runtime import paths
from hedge_pipeline_tests.stages.conftest import (  # noqa: F401 (the stage tests' fixtures)
    smoke_market_state,
    smoke_specialist_inputs,
)
from hedge_pipeline_tests.stages.market_data.helpers import materialize_code, resources

CODES = ("3CN5", "3IN5")
# Standalone cnn_lstm stage config: seconds per run, epochs enough to be killed mid-training.
TINY = {"epochs": 10, "patience": 10, "max_windows": 192, "mc_samples": 2}
TABLES = ("raw_option_chains", "greeks_features", "portfolio_selection")
TRAINING_MODULE = "hedge_pipeline.training"


@pytest.fixture(scope="session")
def _warehouse_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hedge_pipeline.stages.selection.assets import portfolio_selection

    base = tmp_path_factory.mktemp("reliability-warehouse") / "data"
    base.mkdir()
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        for key, value in paths.instance_env(base).items():
            env.setenv(key, value)
        env.delenv("HEDGE_SOURCE", raising=False)
        for code in CODES:
            materialize_code(instance, code)
        selected = dg.materialize([portfolio_selection], instance=instance, resources=resources())
        assert selected.success
        return paths.warehouse_path()


@pytest.fixture
def warehouse(data_dir: Path, _warehouse_template: Path) -> Path:
    """This test's ``warehouse.duckdb``: two codes' market data and a portfolio selection."""
    target = paths.warehouse_path()
    shutil.copyfile(_warehouse_template, target)
    return target


def row_counts(path: Path) -> dict[str, int]:
    """Rows of each market-data table (read-only: the file may be another process's)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def live_processes() -> Iterator[tuple[int, int, int, str]]:
    """``(pid, parent pid, process group, command line)`` of every live process (zombies left
    out), read from ``/proc``; a process that ends while it is read is skipped."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fields[0] != "Z":
            yield int(stat.parent.name), int(fields[1]), int(fields[2]), command


def training_children(ancestor: int) -> list[int]:
    """Live ``python -m hedge_pipeline.training`` processes descending from ``ancestor``."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for pid, parent, _, command in live_processes():
        parents[pid], commands[pid] = parent, command

    def descends(pid: int) -> bool:
        while pid in parents and pid != ancestor:
            pid = parents[pid]
        return pid == ancestor

    return [
        p for p, c in commands.items() if TRAINING_MODULE in c and p != ancestor and descends(p)
    ]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def last_epoch(stage: str) -> int:
    """The epoch of the newest readable ``last.pt`` of ``stage`` (0 when there is none yet)."""
    epochs = [0]
    for path in (paths.checkpoints_dir() / stage).glob("*/last.pt"):
        try:
            epochs.append(int(load_checkpoint(path)["epoch"]))
        except CheckpointError:  # being replaced right now
            continue
    return max(epochs)


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.02
) -> object:
    """Poll ``condition`` every ``every`` seconds until it returns something truthy (20 ms by
    default: a kill must land within the epoch after the one awaited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what} not within {timeout:.0f} s")


def assert_versions_intact(name: str) -> list[int]:
    """Every registered version of ``name`` carries ``weights_sha256`` and loads (checksum
    verified): no version is half-written. Returns the version numbers."""
    client = registry.client()
    numbers = registry.version_numbers(client, name)
    for number in numbers:
        version = client.get_model_version(name, str(number))
        assert len(version.tags.get("weights_sha256", "")) == 64, (number, version.tags)
        assert registry.load_version(client, name, number).version == number
    return numbers
