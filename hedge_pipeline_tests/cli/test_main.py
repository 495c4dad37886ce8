"""The ``hedge`` command, run as users run it: separate processes on one data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.tables import warehouse


def _hedge(data_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, **paths.instance_env(data_dir)}
    env.pop("HEDGE_SOURCE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "hedge_pipeline.cli.main", *args],
        env=env,
        cwd=paths.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_codes_materialized_concurrently_in_separate_processes_all_succeed(data_dir):
    codes = ["3CN5", "3IN5", "3MN5"]
    procs = [_hedge(data_dir, "run", "--select", "market_data", "--partition", c) for c in codes]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out
        assert "Could not set lock" not in out and "WarehouseLockTimeout" not in out, out
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        counts = dict(
            con.execute("SELECT weekly_code, count(*) FROM greeks_features GROUP BY 1").fetchall()
        )
    source = SyntheticSource()
    assert counts == {c: source.load(c).height for c in codes}


def test_unknown_weekly_code_is_refused_by_name(data_dir):
    proc = _hedge(data_dir, "run", "--select", "market_data", "--partition", "NOPE5")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "unknown weekly code 'NOPE5'" in out and "3CN5" in out


def test_a_walk_forward_split_without_its_date_is_refused_before_any_run(data_dir):
    proc = _hedge(data_dir, "run", "--split-mode", "as_of")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "--split-mode as_of needs --as-of" in out and "market data" not in out


def test_unknown_selection_is_refused(data_dir):
    proc = _hedge(data_dir, "run", "--select", "everything")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "market_data" in out


def test_bench_greeks_prints_one_json_document(data_dir):
    proc = _hedge(data_dir, "bench", "greeks", "--n", "20000", "--repeats", "1")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    report = json.loads(out)
    assert report["suite"] == "greeks" and report["machine"]["cpu_count"]
    assert {"ours", "peers", "targets"} <= set(report)


def test_bench_cnn_lstm_prints_one_json_document(data_dir):
    proc = _hedge(data_dir, "bench", "cnn-lstm", "--batch-size", "8", "--steps", "2")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    report = json.loads(out)
    assert report["suite"] == "cnn_lstm" and report["machine"]["torch"]


def test_bench_hedging_evaluates_every_hedger_on_the_same_paths(data_dir):
    args = ["--epochs", "2", "--paths", "1000", "--eval-paths", "5000", "--threads", "1"]
    proc = _hedge(data_dir, "bench", "hedging", *args)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    report = json.loads(out)
    assert set(report["results"]) == {"no_hedge", "bs_delta", "whalley_wilmott", "deep_hedging"}
    for numbers in report["results"].values():
        assert {"price", "mean_pl", "std_pl", "es10", "train_seconds", "steps_per_second"} <= set(
            numbers
        )
    assert report["settings"]["eval_paths"] == 5000


def test_where_to_look_is_make_targets_that_run_as_printed(data_dir, monkeypatch, tmp_path):
    """``hedge run`` ends with Makefile targets (``hedge`` and ``mlflow`` are not on the PATH
    after ``make run``), spelled so that they reach this run's data from where it was typed."""
    from hedge_pipeline.cli import main as cli

    monkeypatch.chdir(paths.REPO_ROOT)
    monkeypatch.setenv("HEDGE_DATA_DIR", str(paths.REPO_ROOT / "data"))
    assert cli._make("ui") == "make ui"

    monkeypatch.setenv("HEDGE_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    printed = cli._make("evaluate")
    assert printed == f"HEDGE_DATA_DIR={paths.data_dir()} make -C {paths.REPO_ROOT} evaluate"
    env = {k: v for k, v in os.environ.items() if k != "HEDGE_DATA_DIR"}
    for target, runs in [
        ("evaluate", ".venv/bin/hedge evaluate"),
        ("ui", ".venv/bin/hedge ui"),
        ("mlflow", f"--backend-store-uri sqlite:///{paths.data_dir()}/mlflow/mlflow.db"),
    ]:
        # What it would run, not run (-s: without make's Entering/Leaving directory lines).
        dry = cli._make(target).replace("make ", "make -n -s ", 1)
        done = subprocess.run(
            ["bash", "-c", dry], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert runs in done.stdout.splitlines()[-1]


@pytest.mark.slow
def test_as_of_selects_the_codes_alive_then_and_only_those_are_trained(data_dir):
    codes = ["3CN5", "3IN5", "3MN5"]
    args = ["--partition", codes[0], "--partition", codes[1], "--partition", codes[2]]
    proc = _hedge(data_dir, "run", "--select", "market_data", *args)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    # 3CN5's last quote is on 2025-05-02: by the end of 2025-05-05 it is no longer alive.
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        last = dict(
            con.execute("SELECT weekly_code, max(ts) FROM greeks_features GROUP BY 1").fetchall()
        )
    alive = sorted(c for c in codes if str(last[c].date()) > "2025-05-05")
    assert alive == ["3IN5", "3MN5"]
    proc = _hedge(data_dir, "run", "--select", "portfolio", "--as-of", "2025-05-05")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"active weekly codes at 2025-05-05: {', '.join(alive)}" in out, out
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        rows = con.execute("SELECT DISTINCT weekly_code FROM portfolio_selection").fetchall()
    assert sorted(code for (code,) in rows) == alive


@pytest.mark.slow
def test_a_history_run_ingests_only_the_codes_alive_at_its_as_of(data_dir, tmp_path):
    """~1,000 codes in a history: without --as-of the run takes the latest as_of whose codes
    are quoted to expiry and ingests those four, not every code; --as-of latest the codes
    alive at the last bar."""
    import numpy as np
    import polars as pl

    from hedge_pipeline.stages.market_data.sources.history import read_history

    history = read_history("sp500")
    day = history.ts.astype("datetime64[us]").astype("datetime64[D]")
    keep = (day >= np.datetime64("2007-01-01")) & (day <= np.datetime64("2008-12-31"))
    path = tmp_path / "spx.csv"
    pl.DataFrame({"date": day[keep].astype(str), "close": history.close[keep]}).write_csv(path)
    env = {"HEDGE_SOURCE": "history", "HEDGE_HISTORY": str(path)}

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "hedge_pipeline.cli.main", "run", "--select", "market_data",
             *args],
            env={**os.environ, **paths.instance_env(data_dir), **env},
            cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    out = run()
    assert "as_of not given: 2008-12-05T20:59:59.999999+00:00" in out, out
    # The four codes are adjacent partitions: one run of the four (HEDGE_CODES_PER_RUN).
    assert "4 of " in out and "[1/1] market data SPX-2008-12-05…SPX-2008-12-26 (4 codes): ok" in out
    out = run("--as-of", "latest")
    assert "as_of latest: 4 of " in out, out
    assert "[1/1] market data SPX-2009-01-02…SPX-2009-01-23 (4 codes): ok" in out, out
    with warehouse.connect(paths.warehouse_path(), read_only=True) as con:
        query = "SELECT count(DISTINCT weekly_code) FROM greeks_features"
        (stored,) = con.execute(query).fetchone()
    assert stored == 8


def test_the_pipes_preview_notice_is_silenced_in_the_processes_hedge_run_starts(monkeypatch):
    """The run workers of queued runs are the code server's children, not ``hedge run``'s: the
    notice is filtered by ``PYTHONWARNINGS``, which every interpreter started from here reads,
    beside the user's own filters; other warnings still show."""
    import warnings

    from hedge_pipeline.cli import main as cli

    monkeypatch.setenv("PYTHONWARNINGS", "default")
    for name in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "HEDGE_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    with warnings.catch_warnings():
        cli._run_console()
    assert os.environ["PYTHONWARNINGS"] == f"default,{cli.PIPES_PREVIEW}"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    notice = "Function `PipesMessageReader.expected_writer_count` is currently in preview, and"
    code = f"import warnings; warnings.warn({notice!r}, UserWarning); warnings.warn('kept')"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "kept" in done.stderr and "Pipes" not in done.stderr, done.stderr


def test_the_seed_and_forecasts_choices_are_valid_config_of_their_ops_only():
    """``hedge run --seed`` reaches every training stage's op and ``--forecasts`` the
    specialists' (whose op is ``specialist_agents``, not the stage's name), each checked
    against the schema of the job that runs it; other steps get the quiet config alone."""
    import dagster as dg

    from hedge_pipeline.cli.main import QUIET, build_parser, stage_run_config
    from hedge_pipeline.definitions import defs

    assert build_parser().parse_args(["run", "--seed", "2"]).seed == 2
    assert build_parser().parse_args(["run"]).seed is None
    config = stage_run_config("specialists", "training_mean", 2)
    resolved = dg.validate_run_config(defs.resolve_job_def("specialists_job"), config)
    chosen = resolved["ops"]["specialist_agents"]["config"]
    assert (chosen["forecasts"], chosen["seed"]) == ("training_mean", 2)
    global_job = defs.resolve_implicit_global_asset_job_def()
    for step in ("cnn_lstm_model", "meta_controller", "joint_model", "hedge_ensemble"):
        resolved = dg.validate_run_config(global_job, stage_run_config(step, "training_mean", 2))
        assert resolved["ops"][step]["config"]["seed"] == 2, step
        assert "forecasts" not in resolved["ops"][step]["config"], step
    assert stage_run_config("specialists") == QUIET
    assert stage_run_config("market_data", "training_mean", 2) == QUIET
    assert stage_run_config("portfolio_selection", seed=2) == QUIET
