"""Baseline hedgers against the E1 figures (docs/notes.md, E1)."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.baselines import BlackScholesDelta, NoHedge, WhalleyWilmott
from hedge_pipeline.hedging.simulator import HedgingProblem, rollout, simulate_paths
from hedge_pipeline.quant.risk import EntropicRisk, ExpectedShortfall

COSTLY = HedgingProblem(cost=1e-3)


@pytest.fixture(scope="module")
def paths() -> torch.Tensor:
    return simulate_paths(COSTLY, 50_000, torch.Generator().manual_seed(21), torch.float64)


def test_whalley_wilmott_beats_delta_on_entropic_price(paths):
    ww = rollout(COSTLY, paths, WhalleyWilmott(COSTLY, risk_aversion=1.0))[0]
    delta = rollout(COSTLY, paths, BlackScholesDelta())[0]
    entropic = EntropicRisk(1.0)
    assert float(entropic.cash(ww)) == pytest.approx(0.028441, abs=3e-4)
    assert float(entropic.cash(ww)) < float(entropic.cash(delta)) - 1e-3
    assert float(ExpectedShortfall(0.1).cash(ww)) == pytest.approx(0.059530, abs=1e-3)


def test_whalley_wilmott_band_collapses_to_delta_without_cost(paths):
    free = HedgingProblem()
    ww = rollout(free, paths[:10_000], WhalleyWilmott(free))[1]
    torch.testing.assert_close(ww, rollout(free, paths[:10_000], BlackScholesDelta())[1])


def test_band_trades_less_than_delta(paths):
    ww = rollout(COSTLY, paths[:1000], WhalleyWilmott(COSTLY))[1]
    delta = rollout(COSTLY, paths[:1000], BlackScholesDelta())[1]
    assert float(ww.diff(dim=1).abs().sum()) < 0.5 * float(delta.diff(dim=1).abs().sum())


def test_no_hedge_holds_nothing(paths):
    assert torch.all(rollout(COSTLY, paths[:100], NoHedge())[1] == 0.0)


def test_rejects_non_positive_risk_aversion():
    with pytest.raises(ValueError, match="risk aversion"):
        WhalleyWilmott(COSTLY, risk_aversion=0.0)
