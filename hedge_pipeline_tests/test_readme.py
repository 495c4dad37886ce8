"""The README's shell examples, true as written (so they cannot rot).

A ```` ```bash ```` block preceded by the line ``<!-- readme-test -->`` is run, whole, in bash
from the repository root after a smoke lineage, the way a reader types it after ``make run``
(``source .venv/bin/activate`` included), and must exit 0. The other blocks start servers or
take minutes (``make run``, ``hedge backfill`` against a webserver); they are checked without
running: each ``hedge …`` line parses with the real argument parser and each ``make TARGET``
is a target of the Makefile.

The smoke lineage is the smallest real one: ``hedge run --profile smoke`` on one weekly code,
every stage from the market data to the ensemble (about two minutes on two cores). Its last
lines, the commands it prints for where to look, are checked against the Makefile too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hedge_pipeline.cli.main import build_parser
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import VARIABLES

README = paths.REPO_ROOT / "README.md"
MARK = "<!-- readme-test -->"
VENV_BIN = paths.REPO_ROOT / ".venv" / "bin"
CODE = "3CN5"  # one weekly code: the cheapest lineage that still has every stage


@dataclass(frozen=True)
class Block:
    """One fenced ``bash`` block of the README."""

    line: int  # of the opening fence, 1-based
    text: str
    tested: bool  # preceded by MARK: run it

    def commands(self) -> Iterator[list[str]]:
        """Each line's words, its comment left out (no line of ours continues onto the next)."""
        for raw in self.text.splitlines():
            if words := shlex.split(raw, comments=True):
                yield words


def bash_blocks(markdown: str) -> list[Block]:
    """Every ```` ```bash ```` block of ``markdown``, in order."""
    lines = markdown.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            before = [line.strip() for line in lines[:i] if line.strip()]
            tested = bool(before) and before[-1] == MARK
            blocks.append(Block(i + 1, "\n".join(lines[i + 1 : end]), tested))
            i = end
        i += 1
    return blocks


BLOCKS = bash_blocks(README.read_text(encoding="utf-8"))


def _env(data_dir: Path) -> dict[str, str]:
    """The reader's shell: no ``HEDGE_*`` of the developer's and no parent ``make``, the data
    directory given."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES.values()}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("VIRTUAL_ENV", None)
    # Under `make test` the parent make's level and flags would make every `make` here print
    # "Entering/Leaving directory" lines; a reader's shell has none of them.
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"):
        env.pop(name, None)
    return {**env, **paths.instance_env(data_dir), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _make_dry_run(target: str, env: dict[str, str]) -> list[str]:
    """The commands ``make TARGET`` would run (``-n``: installs nothing, starts nothing)."""
    done = subprocess.run(
        ["make", "-n", target], cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"make {target}: {done.stderr}"
    return done.stdout.splitlines()


def test_the_readme_has_blocks_to_run():
    tested = [b for b in BLOCKS if b.tested]
    assert tested, f"no ```bash block after {MARK} in the README"
    shown = [words for b in tested for words in b.commands()]
    assert ["hedge", "models", "show", "hedge-ensemble"] in shown
    assert ["hedge", "evaluate"] in shown


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"README:{b.line}")
def test_every_hedge_and_make_example_exists(block: Block, data_dir: Path):
    """What is not run is parsed: a renamed option or target fails here, not for a reader."""
    parser = build_parser()
    for words in block.commands():
        if words[0] == "hedge":
            parser.parse_args(words[1:])  # argparse exits 2 on anything it does not know
        elif words[0] == "make":
            targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            for target in targets:
                _make_dry_run(target, _env(data_dir))


@pytest.fixture(scope="module")
def smoke_lineage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data directory holding a smoke lineage of one weekly code, made by ``hedge run`` as a
    reader runs it; and what that command printed."""
    if not (VENV_BIN / "hedge").is_file():
        pytest.skip(f"the README's commands need the venv {VENV_BIN.parent} (make install)")
    data_dir = tmp_path_factory.mktemp("readme") / "data"
    done = subprocess.run(
        [VENV_BIN / "hedge", "run", "--profile", "smoke", "--partition", CODE],
        cwd=paths.REPO_ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Nothing on the console that is not about the reader's run: no MLflow INFO chatter.
    assert " INFO mlflow." not in done.stderr, done.stderr
    return data_dir, done.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("readme_lineage")
def test_hedge_run_ends_with_make_targets_that_work(smoke_lineage: tuple[Path, str]):
    data_dir, out = smoke_lineage
    where = out[out.index("where to look:") :].splitlines()[1:]
    printed = [shlex.split(line.split("  ")[1].strip()) for line in where if line.strip()]
    prefix = ["HEDGE_DATA_DIR=" + str(data_dir.resolve()), "make"]
    assert [words[:2] for words in printed] == [prefix] * 3, where
    assert [words[2] for words in printed] == ["ui", "mlflow", "evaluate"]

    env = {**_env(data_dir), "HEDGE_DATA_DIR": str(data_dir.resolve())}
    mlflow = _make_dry_run("mlflow", env)[-1]
    assert f"--backend-store-uri sqlite:///{data_dir.resolve()}/mlflow/mlflow.db" in mlflow
    assert _make_dry_run("ui", env)[-1].split() == [".venv/bin/hedge", "ui"]
    # What `make evaluate` runs, run (the install step before it is the Makefile's business).
    evaluate = _make_dry_run("evaluate", env)[-1]
    assert evaluate.split() == [".venv/bin/hedge", "evaluate"]
    done = subprocess.run(
        ["bash", "-c", evaluate], cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^written to .*hedge-ensemble-v1:$", done.stdout, re.MULTILINE), done.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("readme_lineage")
def test_hedge_run_ends_with_the_verdict_and_where_the_time_went(smoke_lineage: tuple[Path, str]):
    _, out = smoke_lineage
    summary = out[out.index("\nsummary\n") : out.index("where to look:")].splitlines()
    trained, promotion, verdict, timing = (line.strip() for line in summary[2:6])
    assert trained.startswith("trained: hedge-cnn-lstm v1; 1 specialists")
    assert "hedge-meta-controller v1" in trained and trained.endswith("hedge-ensemble v1")
    assert re.fullmatch(r"hedge-ensemble v1: (promoted|candidate): .+", promotion), promotion
    # The ensemble against the strongest baseline, with the interval and the windows.
    assert re.fullmatch(
        r"test \(replay\): ensemble ES10 \S+ vs (no_hedge|bs_delta|whalley_wilmott|mv_delta) \S+ "
        r"\(strongest baseline\): Δ \S+ \(\S+%\), 95 % interval \S+ to \S+, "
        r"(better|worse|undecided); \d+ windows in \d+ blocks; lower is better",
        verdict,
    ), verdict
    # While each stage trained, a line per epoch (the ensemble only weighs its members).
    for stage in ("cnn_lstm", f"specialist {CODE}", "meta_controller", "joint"):
        assert re.search(
            rf"^  {stage}: epoch 1/\d+ val_loss \S+ \(best \S+ at 1\); \d+ s so far, at most ",
            out,
            re.MULTILINE,
        ), out
    stages = [part.split()[0] for part in timing.removeprefix("time: ").split("; ")]
    assert stages == ["market_data", "portfolio_selection", "cnn_lstm_model", "specialists",
                      "meta_controller", "joint_model", "hedge_ensemble", "total"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.xdist_group("readme_lineage")
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tested], ids=lambda b: f"README:{b.line}")
def test_readme_examples_run_after_a_smoke_lineage(block: Block, smoke_lineage: tuple[Path, str]):
    data_dir, _ = smoke_lineage
    script = f"set -euo pipefail -x\n{block.text}\n"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=paths.REPO_ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"README line {block.line}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    )
