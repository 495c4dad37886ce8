"""The figures a hedging model is judged by: P&L distributions, the left tail that ES10
measures, the paired view against a baseline, and what the policy does.

Agg-canvas ``Figure``s, never ``pyplot`` (see :mod:`hedge_pipeline.harness.curves` for why).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hedge_pipeline.hedging.evaluation import Evaluation

__all__ = ["plot_left_tail", "plot_paired", "plot_pnl_histogram", "plot_policy_behaviour"]


# Two-panel figures: at most 800 px wide at the saved 90 dpi, the width of the Dagster UI's
# metadata pop-up (a wider image is cut off there).
WIDE = (8.8, 3.8)


def _figure(size: tuple[float, float], title: str) -> Figure:
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    return figure


def plot_pnl_histogram(evaluation: Evaluation, title: str, bins: int = 40) -> Figure:
    """Terminal P&L of every hedger on shared bins, the ES10 threshold of each marked."""
    figure = _figure((8.0, 4.5), title)
    ax = figure.add_subplot()
    values = {name: pl.double().numpy() for name, pl in evaluation.pnl.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=bins)
    for name, pl in values.items():
        (line,) = ax.plot([], [])  # take the next colour of the cycle for both artists
        colour = line.get_color()
        es10 = evaluation.metrics[name]["es10"]
        ax.hist(pl, bins=edges, histtype="step", color=colour, label=f"{name} (ES10 {es10:.3g})")
        ax.axvline(np.quantile(pl, 0.1), color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("terminal P&L of the hedged short book (dotted: 10 % quantile)")
    ax.set_ylabel("episodes")
    ax.legend(fontsize="small")
    return figure


def plot_policy_behaviour(
    evaluation: Evaluation, policy: str, title: str, episodes: int = 3
) -> Figure:
    """Left: ``policy``'s position against the Black–Scholes delta over a few episodes.
    Right: trade frequency (share of decisions that trade) and mean total cost per hedger."""
    figure = _figure(WIDE, title)
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    hedges = evaluation.hedges[policy].double().numpy()
    hedges = hedges if hedges.ndim == 2 else hedges[..., 0]  # the underlying leg
    delta = evaluation.delta.double().numpy()
    steps = np.arange(hedges.shape[1])
    for i in np.linspace(0, hedges.shape[0] - 1, min(episodes, hedges.shape[0])).astype(int):
        (line,) = left.plot(steps, hedges[i], drawstyle="steps-post", label=f"{policy} #{i}")
        left.plot(steps, delta[i], color=line.get_color(), linestyle=":", label=f"BS delta #{i}")
    left.set_xlabel("decision")
    left.set_ylabel("position in the underlying")
    left.legend(fontsize="x-small", ncols=2)
    names = list(evaluation.metrics)
    x = np.arange(len(names))
    frequency = [evaluation.metrics[n]["trade_frequency"] for n in names]
    cost = [evaluation.metrics[n]["total_cost"] for n in names]
    right.bar(x - 0.2, frequency, width=0.4, label="trade frequency")
    twin = right.twinx()
    twin.bar(x + 0.2, cost, width=0.4, color="tab:orange", label="mean total cost")
    right.set_xticks(x, names, rotation=30, ha="right", fontsize="small")
    right.set_ylabel("share of decisions that trade")
    twin.set_ylabel("cost per episode")
    right.legend(loc="upper left", fontsize="small")
    twin.legend(loc="upper right", fontsize="small")
    return figure


def plot_left_tail(
    pnls: dict[str, np.ndarray], es10: dict[str, float], title: str, share: float = 0.25
) -> Figure:
    """The worst ``share`` of the windows of each hedger, sorted: P&L against the share of
    windows at or below it. ES10 is the mean loss left of the 10 % line; each hedger's is
    marked as a dashed level (−ES10) in its colour, so the plot reads as the tail the risk
    figure summarizes: lower curves and lower marks lose more."""
    figure = _figure((8.0, 4.5), title)
    ax = figure.add_subplot()
    for name, pl in pnls.items():
        ordered = np.sort(np.asarray(pl, dtype=np.float64))
        levels = (np.arange(ordered.size) + 1) / ordered.size
        keep = levels <= share
        (line,) = ax.plot(
            levels[keep] * 100, ordered[keep], label=f"{name} (ES10 {es10[name]:.3g})"
        )
        ax.axhline(-es10[name], color=line.get_color(), linestyle="--", linewidth=1)
    ax.axvline(10, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("share of windows at or below (%); dotted: the 10 % of ES10")
    ax.set_ylabel("P&L per window (dashed: −ES10)")
    ax.legend(fontsize="small")
    return figure


def plot_paired(
    hedger: np.ndarray, baseline: np.ndarray, names: tuple[str, str], title: str
) -> Figure:
    """Per window, ``hedger``'s P&L minus ``baseline``'s on the same window (> 0: the hedger
    did better). Left: against the baseline's P&L, so a hedger that gains where the baseline
    loses most shows up at the left. Right: the differences' histogram with their mean."""
    figure = _figure(WIDE, title)
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    ours, theirs = np.asarray(hedger, np.float64), np.asarray(baseline, np.float64)
    difference = ours - theirs
    left.scatter(theirs, difference, s=6, alpha=0.5)
    left.axhline(0.0, color="grey", linewidth=1)
    left.axvline(np.quantile(theirs, 0.1), color="grey", linestyle=":", linewidth=1)
    left.set_xlabel(f"{names[1]} P&L per window (dotted: its 10 % quantile)")
    left.set_ylabel(f"{names[0]} − {names[1]} (> 0: better)")
    right.hist(difference, bins=40)
    right.axvline(0.0, color="grey", linewidth=1)
    right.axvline(difference.mean(), color="tab:red", linestyle="--", linewidth=1,
                  label=f"mean {difference.mean():+.3g}")  # fmt: skip
    right.set_xlabel(f"{names[0]} − {names[1]} per window")
    right.set_ylabel("windows")
    right.legend(fontsize="small")
    return figure
