"""Scoring hedgers side by side: the group-by-group comparison behind the replay twins."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.evaluation import Evaluation, wins_by_group


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
    assert result["median_difference"] == pytest.approx(-0.1)
    assert result["median_relative_difference"] == pytest.approx(-0.05)


def test_groups_must_split_the_episodes_evenly():
    with pytest.raises(RuntimeError):
        wins_by_group(_evaluation([[0.0] * 10], [[0.0] * 10]), 3, "ours", "theirs")
