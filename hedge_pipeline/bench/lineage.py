"""``hedge bench lineage``: the whole lineage trained at past dates, tested on what followed.

``hedge bench walkforward`` holds the hedgers and the vol forecasts to six months after each
date, but it has no portfolio: the meta-controller, the joint model and the ensemble live in
the lineage. This bench runs the lineage itself, exactly as a user does, at each ``as_of``
date, in chronological order on one data directory:

    HEDGE_SOURCE=history HEDGE_HISTORY=<history> HEDGE_HISTORY_WEEKS=<weeks> \\
        hedge run --as-of <date> --split-mode as_of --profile <profile>

so every stage trains on what was known at ``as_of`` (the selection's ``as_of`` split,
``stages.selection.book.split_at``: options chosen from the rows known then; train and
validation are the bars up to it; every later bar is test), and each specialist starts from
its predecessor's weights, trained at an earlier date (the nightly chain a user runs). The
portfolio is the codes alive at ``as_of`` with enough bars before it (the template's
``min_data_size``); the test is their remaining life, hedged by the models of ``as_of``. A
code lives ``weeks`` weeks: at 8 (the default here, where the source's default is 4) four or
five codes qualify, with 1 to 4 weeks left. A portfolio window of the ``daily_history``
template is one decision of one bar, and the portfolio steps on its front code's bars, so a
period tests some 20 windows: few alone, a test of the stages when pooled over 31 periods.

Each run's ensemble logs every test window's P&L for every hedger and stage
(``report/pnl_test_replay.parquet`` of its MLflow run: ``stages.portfolio_models.report``);
this bench compares each with BS delta and with the strongest baseline by the ES10
difference, with a 95 % interval from a block bootstrap over the ensemble's own window blocks,
per period and pooled (periods never share a block). P&L is in percent of the underlying's
close at ``as_of`` (the books are a few options on the index: points of 2003 and of 2018
would otherwise weigh differently in the pool). The pool also holds each stage against its
predecessor in the lineage (:data:`PREDECESSORS`), the question a stage must answer: does it
add anything to what it builds on? The document has the shape of ``bench.walkforward``'s,
whose :func:`~hedge_pipeline.bench.walkforward.markdown` prints it, and :func:`markdown` adds
the stages' table.

A run takes minutes, the whole schedule hours: with ``data_dir`` each finished period's P&L
table is kept under ``periods/``, and a rerun (after a failure, or with more dates) resumes
after them.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.bench.pipeline import environment, measure, scratch_env
from hedge_pipeline.bench.walkforward import (
    against_baselines,
    gains_table,
    paired_gains,
    pool,
    rolling_as_of,
)
from hedge_pipeline.bench.walkforward import markdown as walkforward_markdown

MODEL = "ensemble"
PNL_UNIT = "% of the index at as_of"
REPLAY = "test_replay"
READINGS = ("_without_costs",)  # columns that are readings of a hedger, not hedgers
#: Each stage (and the CNN-LSTM's ablation) and what it builds on.
PREDECESSORS = {
    "specialists_netted": "specialists",
    "meta_controller": "specialists_netted",
    "joint": "meta_controller",
    "ensemble": "joint",
    "ensemble_without_cnn_lstm": "ensemble",
}
_LOG_TAIL = 3_000


def _command(as_of: str, profile: str) -> list[str]:
    return [
        sys.executable, "-m", "hedge_pipeline.cli.main", "run",
        "--as-of", as_of, "--split-mode", "as_of", "--profile", profile,
    ]  # fmt: skip


def latest_report(env: dict[str, str]) -> tuple[int, Path]:
    """The newest ``hedge-ensemble`` version and its fetched ``report/`` folder."""
    from hedge_pipeline.registry import lineage, reports
    from hedge_pipeline.registry import versions as registry

    with environment(env):
        client = registry.client()
        version = lineage.resolve(client, reports.ENSEMBLE)
        return int(version.version), reports.fetch(client, version).directory


def _run_period(
    day: str, profile: str, env: dict[str, str], root: Path, kept: Path, hint: str
) -> dict[str, Any]:
    """``hedge run`` at ``day``; its ensemble's replayed-test P&L table copied to ``kept``
    (written last, under a temporary name: a killed run leaves none)."""
    command = _command(day, profile)
    log = root / f"run-{day}.log"
    result = measure(command, env, log)
    if result["returncode"] != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        raise RuntimeError(f"hedge run at as_of {day} failed ({hint}):\n{text[-_LOG_TAIL:]}")
    version, folder = latest_report(env)
    partial = kept.with_suffix(".partial")
    pl.read_parquet(folder / f"pnl_{REPLAY}.parquet").write_parquet(partial)
    partial.replace(kept)
    return {
        "as_of": day,
        "command": shlex.join(["hedge", *command[3:]]),
        "hedge_ensemble_version": version,
        "wall_s": result["wall_s"],
        "cpu_s": result["cpu_s"],
        "peak_rss_mib": result["peak_rss_mib"],
    }


def _period(as_of: str, frame: pl.DataFrame, spot: float, seed: int, offset: int) -> dict[str, Any]:
    """One period's comparisons, from the ensemble's per-window P&L table, in percent of
    ``spot`` (the underlying's close at ``as_of``: periods years apart become comparable)."""
    hedgers = [
        c for c in frame.columns if c not in ("front_code", "block") and not c.endswith(READINGS)
    ]
    pnls = {name: torch.tensor(frame[name].to_numpy()) * (100.0 / spot) for name in hedgers}
    blocks = torch.tensor(frame["block"].to_numpy())
    fronts = frame["front_code"].unique().sort()
    return {
        "as_of": as_of,
        "spot": spot,
        "test": {
            "codes": fronts.to_list(),
            "episodes": frame.height,
            "blocks": int(torch.unique(blocks).numel()),
            "first_expiry": fronts[0][-10:],
            "last_expiry": fronts[-1][-10:],
        },
        **against_baselines(pnls, blocks, MODEL, seed),
        "_pnl": pnls,
        "_blocks": blocks + offset,
    }


def run(
    history: str = "sp500",
    as_of: Sequence[str] | None = None,
    *,
    weeks: int = 8,
    profile: str = "default",
    train_years: float = 4.0,
    test_months: int = 6,
    seed: int = 0,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """The lineage at every ``as_of`` (default: ``bench.walkforward``'s schedule of
    ``train_years`` and ``test_months``), each period's stages against BS delta and the
    strongest baseline, and their pool; a JSON-able document. ``data_dir``: where the runs
    keep their state (default: a temporary directory, removed afterwards)."""
    from hedge_pipeline.stages.market_data.sources.history import HistorySource

    started = time.perf_counter()
    series = HistorySource(history).history
    bars = series.ts.astype("datetime64[us]").astype("datetime64[D]")
    if as_of is None:
        as_of = rolling_as_of(bars[0], bars[-1], train_years, test_months)
    dates = sorted(as_of)
    with tempfile.TemporaryDirectory(prefix="hedge-lineage-") as scratch:
        root = Path(data_dir or scratch).resolve()
        root.mkdir(parents=True, exist_ok=True)
        env = scratch_env(root) | {
            "HEDGE_SOURCE": "history",
            "HEDGE_HISTORY": history,
            "HEDGE_HISTORY_WEEKS": str(weeks),
        }
        hint = (
            f"the same command with --data-dir {root} resumes here"
            if data_dir
            else "with --data-dir a rerun resumes after the periods that finished"
        )
        done = root / "periods"  # each finished period's P&L table: a rerun resumes
        done.mkdir(exist_ok=True)
        periods, runs = [], []
        for i, day in enumerate(dates):
            kept = done / f"{day}.parquet"
            if kept.exists():
                runs.append({"as_of": day, "resumed_from": str(kept)})
            else:
                runs.append(_run_period(day, profile, env, root, kept, hint))
            frame = pl.read_parquet(kept)
            spot = float(series.close[np.searchsorted(bars, np.datetime64(day), "right") - 1])
            periods.append(_period(day, frame, spot, seed, offset=1_000_000 * i))
    pnls = [p.pop("_pnl") for p in periods]
    blocks = [p.pop("_blocks") for p in periods]
    return {
        "settings": {
            "history": history,
            "as_of": dates,
            "weeks": weeks,
            "profile": profile,
            "seed": seed,
            "windows": sum(int(b.numel()) for b in blocks),
            "seconds": time.perf_counter() - started,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_info("numpy", "torch", "polars", "dagster", "mlflow"),
        },
        "runs": runs,
        "periods": periods,
        "pooled": pool(pnls, blocks, MODEL, seed),
        # Each stage against what it builds on, pooled over the periods.
        "stages": paired_gains(pnls, blocks, PREDECESSORS.items(), seed),
    }


def markdown(report: dict[str, Any]) -> str:
    """``bench.walkforward``'s tables of the document (per period, pooled, every period's
    every hedger with its interval), then each stage against its predecessor."""
    return "\n".join(
        [
            walkforward_markdown(report, "windows", intervals=True, pnl_unit=PNL_UNIT),
            gains_table(report["stages"], "stage"),
            "",
        ]
    )
