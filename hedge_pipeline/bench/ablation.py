"""``hedge bench ablation``: what the CNN-LSTM's forecast adds to each stage, retrained without it.

Holding the forecast at its mean when a trained ensemble runs (the report's
``ensemble_without_cnn_lstm``) asks what the models do with an input they learned to read; it
does not ask whether they would hedge as well had they never had it. This bench answers the
second question from two lineages trained on the same data directory's market, one as usual and
one with every specialist's forecast held at its training mean (``hedge run --forecasts
training_mean``; the portfolio stages read the specialists' stored forecasts, so they train on
the constant too):

    HEDGE_DATA_DIR=A hedge run
    HEDGE_DATA_DIR=B hedge run --forecasts training_mean
    hedge bench ablation --with A --without B [--markdown]

Both runs' newest ensembles log every test window's P&L for every hedger and stage
(``report/pnl_test_replay.parquet`` and ``pnl_test_simulated.parquet``). The two tables must
hold the same windows with the same baselines' P&L (the same market, split and seeds: anything
else is refused, naming what differs). Each stage is then compared with itself across the two
lineages, on the same windows: the ES10 of the stage trained without the forecast minus the
ES10 with it, with a 95 % interval from a block bootstrap over the ensemble's window blocks. A
positive difference is risk the forecast removes.

The module imports neither Dagster nor MLflow but through ``bench.lineage``'s report reader.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import torch

from hedge_pipeline.bench.lineage import latest_report
from hedge_pipeline.bench.machine import machine_info
from hedge_pipeline.hedging.comparison import es_differences
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.markdown import markdown_table

SPLITS = ("test_replay", "test_simulated")
# The learned stages, in lineage order (each a column of the report's P&L tables).
STAGES = ("specialists", "specialists_netted", "meta_controller", "joint", "ensemble")
KEYS = ("front_code", "block")
# Columns no learned model decides: equal in both lineages, or the two runs differ in more
# than the forecast.
BASELINES = ("no_hedge", "bs_delta", "whalley_wilmott")


def compare(
    with_forecast: pl.DataFrame, without: pl.DataFrame, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Each learned stage of one split's P&L tables, trained without the forecast against with
    it: ``{stage: PairedDifference.as_dict()}`` (``hedger`` the ES10 without, ``baseline``
    with), on the same windows.

    >>> g = torch.Generator().manual_seed(0)
    >>> pnl = torch.randn(300, generator=g, dtype=torch.float64).numpy()
    >>> a = pl.DataFrame({"front_code": ["X"] * 300, "block": [i // 3 for i in range(300)],
    ...                   "bs_delta": pnl, "ensemble": 0.5 * pnl})
    >>> b = a.with_columns(ensemble=pl.col("bs_delta"))  # without it: no better than BS delta
    >>> row = compare(a, b)["ensemble"]
    >>> row["verdict"], round(row["relative"], 2)
    ('worse', 1.0)
    """
    _same_windows(with_forecast, without)
    blocks = torch.tensor(with_forecast["block"].to_numpy())
    rows = {}
    for stage in STAGES:
        if stage in with_forecast.columns and stage in without.columns:
            pair = {
                "with": torch.tensor(with_forecast[stage].to_numpy()),
                "without": torch.tensor(without[stage].to_numpy()),
            }
            rows[stage] = es_differences(pair, "with", blocks, seed=seed)["without"].as_dict()
    return rows


def _same_windows(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Refuse two tables that are not the same windows of the same market."""
    if a.select(KEYS).rows() != b.select(KEYS).rows():
        raise ValueError(
            f"the two lineages tested different windows ({a.height} and {b.height}, or the "
            "same number in another order): train both on the same market and template"
        )
    for column in BASELINES:
        if column in a.columns and not a[column].equals(b[column]):
            raise ValueError(
                f"the two lineages' {column} P&L differ on the same windows: their markets "
                "differ in more than the forecast (data, calibration or seeds)"
            )


def run(with_dir: Path, without_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Both data directories' newest ensemble reports, compared split by split."""
    started = dt.datetime.now(dt.UTC)
    versions, splits = {}, {}
    tables: dict[str, dict[str, pl.DataFrame]] = {}
    for name, directory in (("with", with_dir), ("without", without_dir)):
        version, folder = latest_report(paths.instance_env(Path(directory)))
        versions[name] = {"data_dir": str(directory), "hedge_ensemble_version": version}
        tables[name] = {s: pl.read_parquet(folder / f"pnl_{s}.parquet") for s in SPLITS}
    for split in SPLITS:
        splits[split] = compare(tables["with"][split], tables["without"][split], seed)
    return {
        "suite": "forecast-ablation",
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_info("torch", "polars"),
        "lineages": versions,
        "splits": splits,
    }


def markdown(report: dict[str, Any]) -> str:
    """One table per split: each stage's ES10 with and without the forecast, the difference
    and its interval."""
    parts = [f"Ablation of the CNN-LSTM's forecast, {report['date']}."]
    for split, rows in report["splits"].items():
        body = [
            (
                stage,
                f"{r['baseline']:.4f}",
                f"{r['hedger']:.4f}",
                f"{r['difference']:+.4f}",
                f"{r['low']:+.4f} to {r['high']:+.4f}",
                r["verdict"],
                f"{r['windows']} / {r['clusters']}",
            )
            for stage, r in rows.items()
        ]
        header = ["stage", "ES10 with", "ES10 without", "without − with", "95 % interval",
                  "without is", "windows / blocks"]  # fmt: skip
        parts += [f"\n**{split}**\n", markdown_table(header, body, right_from=1)]
    return "\n".join(parts)
