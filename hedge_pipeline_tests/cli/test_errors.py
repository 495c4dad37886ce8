"""Expected failures of the ``hedge`` command: one line on stderr and exit status 2.

Each test runs the real console command in a process of its own, as a user types it, so the
exit status and every byte of stderr are the ones a user sees (Dagster's and MLflow's logging
included). ``--verbose`` adds the traceback; an error that is not the user's keeps it always.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hedge_pipeline.cli import main as cli
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import VARIABLES, UserError
from hedge_pipeline.stages.selection.templates import TemplateError


def hedge(data_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``hedge *argv`` in a new process on ``data_dir``, with ``env`` over a clean environment
    (no ``HEDGE_*`` variable of the developer's shell leaks in)."""
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES.values()}
    return subprocess.run(
        [sys.executable, "-m", "hedge_pipeline.cli.main", *argv],
        env={**base, **paths.instance_env(data_dir), **env},
        cwd=paths.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command, after checking status 2 and no stdout."""
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("hedge: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("HEDGE_SOURCE", "bogus", "expected one of synthetic, files, alpaca, history"),
        ("HEDGE_PROFILE", "huge", "expected one of smoke, default, full"),
        ("HEDGE_BAD_ROWS", "drop", "expected one of reject, quarantine"),
        ("HEDGE_DEVICES", "0", "expected an integer >= 1"),
        ("HEDGE_DEVICES", "two", "expected an integer >= 1"),
        ("HEDGE_SYNTHETIC_SEED", "seven", "expected an integer"),
        ("HEDGE_NIGHTLY_TIMEZONE", "Mars/Olympus", "is not an IANA time zone"),
        ("HEDGE_NIGHTLY_CRON", "at two", "is not a cron string"),
    ],
)
def test_a_bad_variable_stops_hedge_run_with_one_line(data_dir, variable, value, accepted):
    line = one_line(hedge(data_dir, "run", **{variable: value}))
    assert f"{variable}={value!r}" in line and accepted in line
    # Refused before anything was written to the data directory's warehouse.
    assert not paths.warehouse_path().exists()


def test_verbose_adds_the_traceback_above_the_same_line(data_dir):
    for argv in (["--verbose", "run"], ["run", "--verbose"]):
        done = hedge(data_dir, *argv, HEDGE_PROFILE="huge")
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.startswith("Traceback (most recent call last):"), done.stderr
        assert "SettingsError" in done.stderr
        assert done.stderr.splitlines()[-1] == (
            "hedge: error: HEDGE_PROFILE='huge': expected one of smoke, default, full"
        )


def test_an_unknown_template_is_refused_before_any_run(data_dir):
    line = one_line(hedge(data_dir, "run", "--template", "nope"))
    assert "unknown portfolio template 'nope'; known: atm_book" in line
    assert not paths.warehouse_path().exists()  # not even the market data ran


def test_portfolio_commands_refuse_unknown_names_and_folders_in_one_line(data_dir, tmp_path):
    assert "unknown portfolio template 'nope'" in one_line(
        hedge(data_dir, "portfolios", "info", "nope")
    )
    assert "needs a template NAME" in one_line(hedge(data_dir, "portfolios", "info"))
    missing = tmp_path / "no-such-folder"
    line = one_line(hedge(data_dir, "portfolios", "list", HEDGE_PORTFOLIO_DIR=str(missing)))
    assert f"HEDGE_PORTFOLIO_DIR={missing}: not a directory" in line


def test_an_unknown_selection_is_refused_in_one_line(data_dir):
    line = one_line(hedge(data_dir, "run", "--select", "everything"))
    assert "--select 'everything': expected one of market_data" in line


def test_only_the_named_errors_become_user_errors():
    """A domain error the command expects becomes a ``UserError``; any other exception, even
    of a related class, passes through untouched and keeps its traceback (a bug is a bug)."""
    with (
        pytest.raises(UserError, match="unknown template") as caught,
        cli._user_errors(TemplateError),
    ):
        raise TemplateError("unknown template")
    assert isinstance(caught.value.__cause__, TemplateError)  # --verbose shows the original
    with pytest.raises(ValueError, match="a bug") as bug, cli._user_errors(TemplateError):
        raise ValueError("a bug")
    assert not isinstance(bug.value, UserError)
