"""The ensemble's evaluation as a quant reads it: the verdict first, then every hedger against
the strongest baseline, with intervals, window counts, units and the direction that is better.

A risk table of twelve hedgers and thirteen columns answers many questions and none first. The
question a user brings is one: did the trained model hedge better than what I already have, by
how much, how sure? So each test split gets

* the *strongest baseline*: of the textbook hedges that trade the same instruments as the
  portfolio (no hedge, BS delta, Whalley–Wilmott, and BS delta-gamma when the books trade hedge
  options), the one with the lowest ES10 on that split. Picking it on the test split makes the
  comparison harder for the trained models, never easier;
* every hedger's ES10 minus that baseline's on the same windows, with a 95 % bootstrap interval
  over blocks of overlapping windows (:func:`~hedge_pipeline.hedging.comparison.es_differences`,
  :func:`.evaluation.window_blocks`) and the counts it rests on;
* the plots that show the same: each hedger's left tail with its ES10 marked, and the ensemble
  against the baseline window by window.

The full risk table (every column of :mod:`.evaluation`) and the tail by front code follow, and
one table of definitions ends the report.

Each split also gets the lineage read stage by stage (:func:`stage_differences`): every
portfolio stage against the stage it builds on (:data:`STAGES`) and against the strongest
baseline, each with its interval, so a stage that adds nothing shows as such rather than
hiding behind the stages before it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from torch import Tensor

from hedge_pipeline.harness.tracking import png_markdown
from hedge_pipeline.hedging import comparison
from hedge_pipeline.hedging.comparison import Comparison
from hedge_pipeline.hedging.plots import plot_left_tail, plot_paired
from hedge_pipeline.runtime.markdown import markdown_table

#: Each portfolio stage and the stage it builds on: the specialists start at BS delta, the
#: meta-controller nets and mixes the specialists, the joint model (the ensemble's heaviest
#: member) fine-tunes the meta-controller, the ensemble weights the joint models.
STAGES = (
    ("specialists", "bs_delta"),
    ("meta_controller", "specialists"),
    ("joint", "meta_controller"),
    ("ensemble", "joint"),
)
#: The hedgers of the left-tail plot (the strongest baseline is added).
TAIL_PLOT = ("bs_delta", "specialists", "meta_controller", "ensemble")
MODEL = "ensemble"
EXTRA_COLUMNS = (("mean P&L", "mean_pl", ".3g"), ("cost", "total_cost", ".3g"),
                 ("win rate", "win_rate", ".0%"))  # fmt: skip
UNITS = (
    "P&L per window in the quotes' price units, for the short book of every present code "
    "(one unit per selected option, the template's weights), hedged over one window of the "
    "stage's decisions"
)
COLUMNS = ("es10", "price", "entropic", "mean_pl", "std_pl", "sharpe", "sortino", "calmar",
           "max_drawdown", "win_rate", "profit_rate", "var_compliance", "total_cost")  # fmt: skip
DEFINITIONS = (
    ("ES10", "expected shortfall at 10 %: the mean loss of the worst 10 % of windows; lower is "
             "better"),
    ("strongest baseline", "the textbook hedge with the same instruments and the lowest ES10 "
                           "on the split"),
    ("Δ ES10", "the hedger's ES10 minus the baseline's on the same windows; negative is an "
               "improvement"),
    ("95 % interval", "percentile bootstrap of Δ ES10, resampling blocks of overlapping windows "
                      "(one block: the windows of one front code starting within one window's "
                      "length of each other)"),
    ("verdict", "better / worse when the interval excludes 0, else undecided"),
    ("windows, blocks", "the test windows scored, and the independent blocks the interval rests "
                        "on"),
    ("win rate", "share of windows where the hedger ends above BS delta by more than float "
                 "noise (ties are not wins)"),
    ("contribution to ES10", "a front code's tail losses over the tail size: the contributions "
                             "add up to the hedger's ES10"),
    ("*_without_costs", "the same positions traded for free: how far cost savings alone could "
                        "go"),
    ("ensemble_without_cnn_lstm", "the ensemble with the CNN-LSTM's forecasts held at their "
                                  "training means (what the forecasts add)"),
    ("guard share", "share of decisions where the turbulence guard set the ensemble to BS "
                    "delta"),
)  # fmt: skip


def compare(
    tables: Mapping[str, Mapping[str, Mapping[str, float]]],
    pnls: Mapping[str, Mapping[str, Tensor]],
    blocks: Mapping[str, Tensor],
    seed: int = 0,
) -> dict[str, Comparison]:
    """Every split's :class:`~hedge_pipeline.hedging.comparison.Comparison` of the ensemble
    (``blocks``: each window's bootstrap block)."""
    return {
        split: comparison.compare(table, pnls[split], blocks[split], MODEL, seed=seed)
        for split, table in tables.items()
    }


def stage_differences(
    pnls: Mapping[str, Tensor], blocks: Tensor, baseline: str, seed: int = 0
) -> dict[str, dict[str, comparison.PairedDifference]]:
    """Per stage of :data:`STAGES` present in ``pnls``: its ES10 difference from its
    predecessor (``previous``) and from ``baseline`` (``baseline``), each with the block
    bootstrap interval of :func:`~hedge_pipeline.hedging.comparison.es_differences`.

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> bs = torch.randn(400, generator=g, dtype=torch.float64)
    >>> pnls = {"bs_delta": bs, "specialists": 0.8 * bs, "meta_controller": 0.8 * bs}
    >>> rows = stage_differences(pnls, torch.arange(400) // 4, "bs_delta")
    >>> rows["specialists"]["previous"].verdict, rows["meta_controller"]["previous"].difference
    ('better', 0.0)
    >>> rows["meta_controller"]["baseline"].verdict, sorted(rows)
    ('better', ['meta_controller', 'specialists'])
    """
    rows: dict[str, dict[str, comparison.PairedDifference]] = {}
    for stage, previous in STAGES:
        if stage not in pnls or previous not in pnls:
            continue
        pair = {name: pnls[name] for name in (stage, previous, baseline)}
        against_previous = comparison.es_differences(pair, previous, blocks, seed=seed)
        against_baseline = comparison.es_differences(pair, baseline, blocks, seed=seed)
        rows[stage] = {"previous": against_previous[stage], "baseline": against_baseline[stage]}
    return rows


def stage_table(
    rows: Mapping[str, Mapping[str, comparison.PairedDifference]], baseline: str
) -> str:
    """Markdown of :func:`stage_differences`: one line per stage."""
    previous = dict(STAGES)

    def cells(d: comparison.PairedDifference) -> list[str]:
        return [f"{d.difference:+.4g}", f"{d.low:+.3g} to {d.high:+.3g}", f"{d.relative:+.2%}",
                d.verdict]  # fmt: skip

    lines = (
        [stage, previous[stage], f"{r['previous'].hedger:.4g}", *cells(r["previous"]),
         *cells(r["baseline"])]
        for stage, r in rows.items()
    )  # fmt: skip
    header = ["stage", "builds on", "ES10 ↓", "Δ vs it", "95 % interval", "Δ %", "verdict",
              f"Δ vs {baseline}", "95 % interval", "Δ %", "verdict"]  # fmt: skip
    return markdown_table(header, lines, right_from=2)


def comparison_table(result: Comparison, table: Mapping[str, Mapping[str, float]]) -> str:
    """Every hedger against the strongest baseline, with the columns a verdict rests on."""
    return result.table(table, EXTRA_COLUMNS)


def risk_table(table: Mapping[str, Mapping[str, float]]) -> str:
    """Every column of :mod:`.evaluation` for every hedger."""
    rows = ([name, *(f"{row[c]:.4g}" for c in COLUMNS)] for name, row in table.items())
    return markdown_table(["hedger", *COLUMNS], rows, right_from=1)


def tail_table(tails: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """One row per (hedger, front code) of :func:`.evaluation.tail_by_front`'s figures."""
    rows = (
        [hedger, code, str(row["windows"]), f"{row['mean_loss']:.4g}",
         f"{row['es10_contribution']:.4g}"]
        for hedger, by_code in tails.items()
        for code, row in by_code.items()
    )  # fmt: skip
    header = ["hedger", "front code", "windows in the tail", "mean loss", "contribution to ES10"]
    return markdown_table(header, rows, right_from=2)


def definitions_table() -> str:
    return markdown_table(["term", "meaning"], DEFINITIONS)


@dataclass(frozen=True)
class Report:
    """What :func:`write` produced: the markdown entries for Dagster (as Pipes metadata) and
    the figure files."""

    metadata: dict[str, Any]
    figures: dict[str, Path]


def pnl_frame(pnls: Mapping[str, Tensor], labels: pl.DataFrame) -> pl.DataFrame:
    """One row per window: its ``labels`` (front code, bootstrap block), then every hedger's
    P&L. What a walk-forward pools across periods, and what a user re-tests with another
    statistic than ES10, without re-running the stage."""
    return labels.with_columns(
        pl.Series(name, pnl.double().numpy(), dtype=pl.Float64) for name, pnl in pnls.items()
    )


def write(
    folder: Path,
    verdict: tuple[str, str],
    comparisons: Mapping[str, Comparison],
    tables: Mapping[str, Mapping[str, Mapping[str, float]]],
    tails: Mapping[str, Any],
    pnls: Mapping[str, Mapping[str, Tensor]],
    labels: Mapping[str, pl.DataFrame],
    document: Mapping[str, Any],
    stages: Mapping[str, Mapping[str, Mapping[str, comparison.PairedDifference]]],
) -> Report:
    """``report.md``, ``report.json`` (``document`` plus the comparisons and the stage by
    stage differences ``stages``, per split), the figures and ``pnl_<split>.parquet``
    (:func:`pnl_frame`, ``labels`` per split) in ``folder``; the markdown entries the asset
    shows."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, frame in labels.items():
        pnl_frame(pnls[split], frame).write_parquet(folder / f"pnl_{split}.parquet")
    decision, reason = verdict
    figures: dict[str, Path] = {}
    for split, result in comparisons.items():
        label = split.replace("_", " ")
        shown = dict.fromkeys([result.baseline, *TAIL_PLOT])
        tail = {name: pnls[split][name].double().numpy() for name in shown}
        es10 = {name: tables[split][name]["es10"] for name in shown}
        figure = plot_left_tail(tail, es10, f"left tail of the portfolio P&L, {label}")
        figures[f"left_tail_{split}"] = _save(figure, folder / f"left_tail_{split}.png")
        figure = plot_paired(
            pnls[split][MODEL].double().numpy(),
            pnls[split][result.baseline].double().numpy(),
            (MODEL, result.baseline),
            f"ensemble against {result.baseline} on the same windows, {label}",
        )
        figures[f"paired_{split}"] = _save(figure, folder / f"paired_{split}.png")
    lines = [
        "# hedge-ensemble evaluation",
        "",
        f"**{decision}**: {reason}",
        "",
        f"Units: {UNITS}. Lower ES10 is better.",
    ]
    for split, result in comparisons.items():
        label = split.replace("_", " ")
        lines += [
            "",
            f"## {label.capitalize()}: against {result.baseline}",
            "",
            result.headline + ".",
            "",
            comparison_table(result, tables[split]),
            "",
            f"### Stage by stage, {label}",
            "",
            stage_table(stages[split], result.baseline),
            "",
            f"![left tail, {label}](left_tail_{split}.png)",
            f"![paired, {label}](paired_{split}.png)",
        ]
    for split in comparisons:
        label = split.replace("_", " ")
        lines += ["", f"## All metrics, {label}", "", risk_table(tables[split])]
        lines += ["", f"### Worst 10 % of windows by front code, {label}", ""]
        lines += [tail_table(tails[split])]
    lines += ["", "## Definitions", "", definitions_table(), ""]
    (folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
    full = dict(document) | {
        "comparisons": {
            split: {"baseline": c.baseline} | {n: r.as_dict() for n, r in c.rows.items()}
            for split, c in comparisons.items()
        },
        "stages": {
            split: {stage: {k: d.as_dict() for k, d in row.items()} for stage, row in rows.items()}
            for split, rows in stages.items()
        },
    }
    (folder / "report.json").write_text(json.dumps(full, indent=2), encoding="utf-8")
    markdown: dict[str, str] = {}
    for split, result in comparisons.items():
        markdown[f"evaluation_{split}"] = comparison_table(result, tables[split])
        markdown[f"stages_{split}"] = stage_table(stages[split], result.baseline)
        markdown[f"all_metrics_{split}"] = risk_table(tables[split])
        markdown[f"tail_by_front_{split}"] = tail_table(tails[split])
    markdown |= {key: png_markdown(path, key.replace("_", " ")) for key, path in figures.items()}
    markdown["definitions"] = definitions_table()
    metadata = {key: {"raw_value": text, "type": "md"} for key, text in markdown.items()}
    return Report(metadata, figures)


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=90)
    return path
