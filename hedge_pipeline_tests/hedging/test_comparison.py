"""Hedgers against a baseline on the same windows: paired ES10 differences and their intervals."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.comparison import (
    _cluster_counts,
    _resampled_es,
    compare,
    es_differences,
)
from hedge_pipeline.quant.risk import ExpectedShortfall


def test_the_interval_resamples_whole_clusters():
    generator = torch.Generator().manual_seed(0)
    # 40 start states of 50 windows; each state's windows share a common shock, which the
    # hedger meets better than the baseline in some states and worse in others.
    state_shock = torch.randn(40, 1, generator=generator).expand(40, 50)
    theirs = (torch.randn(40, 50, generator=generator) + 3.0 * state_shock).flatten()
    edge = 0.3 * torch.randn(40, 1, generator=generator).expand(40, 50)
    ours = theirs + edge.flatten()
    pnls = {"ours": ours, "theirs": theirs}
    by_state = torch.arange(40).repeat_interleave(50)
    clustered = es_differences(pnls, "theirs", by_state, resamples=400)["ours"]
    naive = es_differences(pnls, "theirs", torch.arange(2000), resamples=400)["ours"]
    es = ExpectedShortfall(0.1)
    direct = es.cash(ours.double()) - es.cash(theirs.double())
    assert clustered.difference == pytest.approx(float(direct))
    assert clustered.low <= clustered.difference <= clustered.high
    assert (clustered.windows, clustered.clusters, naive.clusters) == (2000, 40, 2000)
    # Independent windows would claim more certainty than 40 states can give.
    assert clustered.high - clustered.low > 1.5 * (naive.high - naive.low)


def test_a_hedger_ahead_by_a_constant_has_a_point_interval():
    theirs = torch.randn(300, generator=torch.Generator().manual_seed(1))
    rows = es_differences({"ours": theirs + 0.25, "theirs": theirs}, "theirs",
                          torch.arange(300) // 30)  # fmt: skip
    ours = rows["ours"]
    assert (ours.difference, ours.low, ours.high) == pytest.approx((-0.25, -0.25, -0.25))
    assert ours.verdict == "better" and ours.relative < 0
    assert (rows["theirs"].difference, rows["theirs"].low, rows["theirs"].high) == (0, 0, 0)


def test_each_resample_is_the_es10_of_the_windows_it_draws():
    # The vectorized resample (a count per window) against drawing the rows themselves.
    pnl = torch.randn(97, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    clusters = torch.arange(97) // 5
    counts, window_cluster = _cluster_counts(clusters, 20, torch.Generator().manual_seed(3))
    weights = counts[:, window_cluster]
    order = torch.argsort(pnl)
    fast = _resampled_es(pnl[order], weights[:, order], 0.1)
    for r in range(20):
        rows = torch.repeat_interleave(torch.arange(97), weights[r].long())
        assert float(fast[r]) == pytest.approx(float(ExpectedShortfall(0.1).cash(pnl[rows])))


def test_the_model_is_compared_with_the_strongest_baseline_of_the_table():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(200, generator=g)
    pnls = {"no_hedge": 3 * base, "bs_delta": base, "whalley_wilmott": 0.8 * base,
            "policy": 0.9 * base}  # fmt: skip
    es = ExpectedShortfall(0.1)
    table = {name: {"es10": float(es.cash(pl.double())), "mean_pl": 0.0}
             for name, pl in pnls.items()}  # fmt: skip
    result = compare(table, pnls, torch.arange(200) // 4, "policy")
    assert result.baseline == "whalley_wilmott"  # the lowest ES10 of the baselines
    assert result.of_model.verdict == "worse"
    assert result.headline.startswith("policy ES10 ")
    assert "vs whalley_wilmott" in result.headline and "50 blocks" in result.headline
    markdown = result.table(table, (("mean P&L", "mean_pl", ".2f"),))
    assert markdown.splitlines()[0] == (
        "| hedger | ES10 ↓ | Δ vs whalley_wilmott | 95 % interval | Δ % | verdict | mean P&L |"
    )
    assert "| **policy** |" in markdown and "| baseline |" in markdown
