"""Hedgers against a baseline on the same windows: paired differences with bootstrap intervals.

A risk table says which hedger had the lower ES10 on one test set. A user deciding whether to
ship a model needs by how much, and how sure. Every hedger of a report runs on the same windows,
so the comparison is paired: the difference of two risk figures on the same windows, with a
percentile bootstrap that resamples whole *clusters* of windows. A cluster is what one
independent draw of the test period's risk looks like: a start state (simulated windows drawn
from one state share it), or a block of replayed windows that overlap in time (windows one bar
apart share almost all of their path). Resampling windows one by one would make a few hundred
overlapping windows look like a few hundred independent ones and the interval far too narrow.

All resamples draw the same clusters for every hedger (common random numbers), so the
differences of one report are comparable with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hedge_pipeline.hedging.rows import BASELINE_ROWS
from hedge_pipeline.quant.risk import ExpectedShortfall
from hedge_pipeline.runtime.markdown import markdown_table

__all__ = [
    "Comparison",
    "PairedDifference",
    "compare",
    "es_differences",
    "strongest_baseline",
    "time_blocks",
]


@dataclass(frozen=True)
class PairedDifference:
    """``hedger``'s risk minus ``baseline``'s on the same windows (lower risk is better, so a
    negative ``difference`` is an improvement), with its ``level`` bootstrap interval."""

    hedger: float
    baseline: float
    difference: float
    low: float
    high: float
    windows: int
    clusters: int
    level: float = 0.95

    @property
    def relative(self) -> float:
        """The difference over the baseline's magnitude (−0.05: 5 % less risk)."""
        return self.difference / abs(self.baseline) if self.baseline else float("nan")

    @property
    def verdict(self) -> str:
        """``better`` or ``worse`` when the interval excludes 0, else ``undecided``.

        >>> PairedDifference(1.0, 2.0, -1.0, -1.5, -0.2, 100, 10).verdict
        'better'
        >>> PairedDifference(2.1, 2.0, 0.1, -0.3, 0.4, 100, 10).verdict
        'undecided'
        """
        if self.high < 0:
            return "better"
        if self.low > 0:
            return "worse"
        return "undecided"

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "hedger": self.hedger,
            "baseline": self.baseline,
            "difference": self.difference,
            "relative": self.relative,
            "low": self.low,
            "high": self.high,
            "windows": self.windows,
            "clusters": self.clusters,
            "verdict": self.verdict,
        }


def time_blocks(tau_start: Tensor, tau_end: Tensor) -> Tensor:
    """Each window's block: which stretch of one window's length (the median of
    ``tau_start − tau_end``, in the same time to expiry) its start falls in. Windows one bar
    apart share almost all of their path; a block holds the windows that overlap the most and
    is resampled whole (module docstring). Windows from one start state share a block.

    >>> start = torch.tensor([0.35, 0.33, 0.25, 0.15, 0.05], dtype=torch.float64)
    >>> time_blocks(start, start - 0.1).tolist()
    [3, 3, 2, 1, 0]
    """
    start, end = tau_start.double(), tau_end.double()
    length = float((start - end).median().clamp(min=1e-12))
    return torch.floor(start / length).long()


def _cluster_counts(
    clusters: Tensor, resamples: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """How often each cluster is drawn in each resample (as many draws as there are
    clusters, with replacement), and each window's cluster index. Shape: (R, K), (n,)."""
    ids, inverse = torch.unique(clusters, return_inverse=True)
    k = ids.numel()
    drawn = torch.randint(k, (resamples, k), generator=generator)
    counts = torch.zeros((resamples, k), dtype=torch.float64)
    counts.scatter_add_(1, drawn, torch.ones_like(drawn, dtype=torch.float64))
    return counts, inverse


def _resampled_es(sorted_pnl: Tensor, w: Tensor, p: float) -> Tensor:
    """ES ``p`` of each resample, the resample given as a count per window (``w`` (R, n), in
    the order of ``sorted_pnl``, the P&L sorted ascending): the worst ⌈p·N⌉ of its N
    outcomes, as :class:`ExpectedShortfall` takes them."""
    before = torch.cumsum(w, dim=1) - w
    total = w.sum(dim=1, keepdim=True)
    k = torch.clamp(torch.ceil(p * total - 1e-9), min=1.0)
    taken = torch.clamp(torch.minimum(w, k - before), min=0.0)
    return -(taken * sorted_pnl).sum(dim=1) / k.squeeze(1)


def es_differences(
    pnls: Mapping[str, Tensor],
    baseline: str,
    clusters: Tensor,
    p: float = 0.1,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, PairedDifference]:
    """Every hedger of ``pnls`` (P&L per window, all on the same windows) against
    ``baseline``: the expected shortfall at ``p`` of each, their difference and its
    percentile bootstrap interval over resampled ``clusters`` (module docstring). The
    baseline's own row is a difference of exactly 0.

    Shape: pnls values (n,); clusters (n,) integer ids.

    >>> import torch
    >>> g = torch.Generator().manual_seed(1)
    >>> base = torch.randn(400, generator=g, dtype=torch.float64)
    >>> rows = es_differences(
    ...     {"base": base, "calmer": 0.5 * base}, "base", torch.arange(400) // 4, resamples=200
    ... )
    >>> rows["base"].difference, rows["base"].low, rows["calmer"].verdict
    (0.0, 0.0, 'better')
    >>> round(rows["calmer"].relative, 2), rows["calmer"].clusters
    (-0.5, 100)
    """
    measure = ExpectedShortfall(p)
    values = {name: pnl.double() for name, pnl in pnls.items()}
    point = {name: float(measure.cash(pnl)) for name, pnl in values.items()}
    counts, window_cluster = _cluster_counts(
        clusters, resamples, torch.Generator().manual_seed(seed)
    )
    tail = (1.0 - level) / 2.0
    quantiles = torch.tensor([tail, 1.0 - tail], dtype=torch.float64)
    # Each hedger's P&L sorted once; its windows' clusters in that order.
    orders = {name: torch.argsort(pnl) for name, pnl in values.items()}
    resampled: dict[str, list[Tensor]] = {name: [] for name in values}
    for chunk in torch.split(counts, 100):  # (100, n) weights at a time: bounded memory
        for name, order in orders.items():
            weights = chunk[:, window_cluster[order]]
            resampled[name].append(_resampled_es(values[name][order], weights, p))
    reference = torch.cat(resampled[baseline])
    rows = {}
    for name, parts in resampled.items():
        low, high = torch.quantile(torch.cat(parts) - reference, quantiles).tolist()
        rows[name] = PairedDifference(
            hedger=point[name],
            baseline=point[baseline],
            difference=point[name] - point[baseline],
            low=low,
            high=high,
            windows=int(values[name].numel()),
            clusters=int(counts.shape[1]),
            level=level,
        )
    return rows


def strongest_baseline(table: Mapping[str, Mapping[str, float]]) -> str:
    """The baseline row of a risk table with the lowest ES10: of the textbook hedges that trade
    the instruments the table's hedgers trade (``bs_delta_gamma`` appears only when they trade
    hedge options), the hardest to beat. Picking it on the test set itself makes the
    comparison harder for a trained model, never easier.

    >>> strongest_baseline({"no_hedge": {"es10": 9.0}, "bs_delta": {"es10": 2.6},
    ...                     "whalley_wilmott": {"es10": 2.7}, "ensemble": {"es10": 1.0}})
    'bs_delta'
    """
    present = [name for name in BASELINE_ROWS if name in table]
    return min(present, key=lambda name: table[name]["es10"])


@dataclass(frozen=True)
class Comparison:
    """One test set: its strongest baseline, every hedger against it, and the hedger the
    report is about (``model``)."""

    baseline: str
    rows: dict[str, PairedDifference]
    model: str

    @property
    def of_model(self) -> PairedDifference:
        return self.rows[self.model]

    @property
    def headline(self) -> str:
        """The model against the strongest baseline in one sentence."""
        row = self.of_model
        return (
            f"{self.model} ES10 {row.hedger:.4g} vs {self.baseline} {row.baseline:.4g} "
            f"(strongest baseline): Δ {row.difference:+.3g} ({row.relative:+.1%}), 95 % "
            f"interval {row.low:+.3g} to {row.high:+.3g}, {row.verdict}; {row.windows} windows "
            f"in {row.clusters} blocks; lower is better"
        )

    def headline_metadata(self) -> dict[str, float | int | str]:
        """The headline as numbers (and the sentence), for a materialization's metadata: the
        UI plots numeric entries across materializations."""
        row = self.of_model
        return {
            "verdict": self.headline,
            "test_es10": row.hedger,
            "strongest_baseline": self.baseline,
            "strongest_baseline_es10": row.baseline,
            "es10_vs_baseline": row.difference,
            "es10_vs_baseline_low": row.low,
            "es10_vs_baseline_high": row.high,
            "test_windows": row.windows,
            "test_blocks": row.clusters,
        }

    def table(
        self,
        metrics: Mapping[str, Mapping[str, float]],
        extra: Sequence[tuple[str, str, str]] = (),
    ) -> str:
        """Markdown: every hedger's ES10 and its difference from the baseline with the
        interval and verdict, then ``extra`` columns ``(header, metric, format)`` read off
        ``metrics`` (the risk table)."""
        rows = []
        for name, row in self.rows.items():
            own = name == self.baseline
            rows.append(
                [
                    f"**{name}**" if name == self.model else name,
                    f"{row.hedger:.4g}",
                    "baseline" if own else f"{row.difference:+.3g}",
                    "" if own else f"{row.low:+.3g} to {row.high:+.3g}",
                    "" if own else f"{row.relative:+.1%}",
                    "" if own else row.verdict,
                    *(format(metrics[name][key], spec) for _, key, spec in extra),
                ]
            )
        header = ["hedger", "ES10 ↓", f"Δ vs {self.baseline}", "95 % interval", "Δ %", "verdict"]
        return markdown_table([*header, *(h for h, _, _ in extra)], rows, right_from=1)


def compare(
    table: Mapping[str, Mapping[str, float]],
    pnls: Mapping[str, Tensor],
    clusters: Tensor,
    model: str,
    seed: int = 0,
) -> Comparison:
    """Every hedger of ``pnls`` against the strongest baseline of ``table`` (module
    docstring); ``model`` names the hedger the report is about."""
    baseline = strongest_baseline(table)
    return Comparison(baseline, es_differences(pnls, baseline, clusters, seed=seed), model)
