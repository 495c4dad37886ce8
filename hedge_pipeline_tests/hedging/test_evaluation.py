"""Scoring hedgers side by side: the group-by-group comparison behind the replay twins."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.evaluation import Evaluation, es10_gain_interval, wins_by_group
from hedge_pipeline.quant.risk import ExpectedShortfall


def _evaluation(ours: list[list[float]], theirs: list[list[float]]) -> Evaluation:
    pnl = {"ours": torch.tensor(ours).flatten(), "theirs": torch.tensor(theirs).flatten()}
    return Evaluation(metrics={}, pnl=pnl, hedges={}, delta=torch.zeros(0))


def test_wins_are_counted_group_by_group_on_each_groups_own_tail():
    # Ten windows per group: ES 10 % is minus the worst one.
    theirs = [[0.0] * 9 + [-1.0], [0.0] * 9 + [-1.0], [0.0] * 9 + [-2.0]]
    ours = [[0.0] * 9 + [-0.5], [0.0] * 9 + [-1.5], [-1.9] * 10]
    result = wins_by_group(_evaluation(ours, theirs), 3, "ours", "theirs")
    # Gains: -0.5, +0.5, -0.1: ours wins groups 1 and 3, though pooled its tail (-1.9 x 10)
    # is worse than theirs.
    assert result["share"] == pytest.approx(2 / 3)
    assert result["median_gain"] == pytest.approx(-0.1)
    assert result["median_relative_gain"] == pytest.approx(-0.05)


def test_groups_must_split_the_episodes_evenly():
    with pytest.raises(RuntimeError):
        wins_by_group(_evaluation([[0.0] * 10], [[0.0] * 10]), 3, "ours", "theirs")


def test_the_gain_interval_resamples_whole_clusters():
    generator = torch.Generator().manual_seed(0)
    # 40 start states of 50 windows; each state's windows share a common shock, which the
    # hedger meets better than the baseline in some states and worse in others.
    state_shock = torch.randn(40, 1, generator=generator).expand(40, 50)
    theirs = torch.randn(40, 50, generator=generator) + 3.0 * state_shock
    edge = 0.3 * torch.randn(40, 1, generator=generator).expand(40, 50)
    ours = theirs + edge
    evaluation = _evaluation(ours.tolist(), theirs.tolist())
    by_state = torch.arange(40).repeat_interleave(50)
    clustered = es10_gain_interval(evaluation, "ours", "theirs", by_state, resamples=400)
    naive = es10_gain_interval(evaluation, "ours", "theirs", torch.arange(2000), resamples=400)
    es = ExpectedShortfall(0.1)
    direct = es.cash(evaluation.pnl["ours"].double()) - es.cash(evaluation.pnl["theirs"].double())
    assert clustered["gain"] == pytest.approx(float(direct))
    assert clustered["low"] <= clustered["gain"] <= clustered["high"]
    # Independent windows would claim more certainty than 40 states can give.
    assert clustered["high"] - clustered["low"] > 1.5 * (naive["high"] - naive["low"])


def test_a_hedger_ahead_by_a_constant_has_a_point_interval():
    theirs = torch.randn(10, 30, generator=torch.Generator().manual_seed(1))
    evaluation = _evaluation((theirs + 0.25).tolist(), theirs.tolist())
    result = es10_gain_interval(evaluation, "ours", "theirs", torch.arange(300) // 30)
    assert result == pytest.approx({"gain": -0.25, "low": -0.25, "high": -0.25})
