"""Risk measures on distributions with closed-form prices."""

from __future__ import annotations

import math

import pytest
import torch

from hedge_pipeline.quant.risk import (
    EntropicRisk,
    ExpectedShortfall,
    MeanVariance,
    parse_criterion,
)


def _normal(mu: float, sigma: float, n: int = 1_000_000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return mu + sigma * torch.randn(n, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize(("a", "mu", "sigma"), [(1.0, 0.1, 0.2), (5.0, -0.3, 0.1)])
def test_entropic_of_normal_is_minus_mean_plus_half_a_variance(a, mu, sigma):
    pl = _normal(mu, sigma)
    assert float(EntropicRisk(a).cash(pl)) == pytest.approx(-mu + 0.5 * a * sigma**2, abs=1e-3)


def test_entropic_is_stable_where_exp_overflows():
    pl = torch.tensor([-1000.0, 0.0], dtype=torch.float64)
    assert float(EntropicRisk(1.0).cash(pl)) == pytest.approx(1000.0 - math.log(2.0))


def test_expected_shortfall_of_uniform():
    pl = torch.linspace(-1.0, 1.0, 2_000_001, dtype=torch.float64)  # U(−1, 1)
    # Worst 10 %: U(−1, −0.8), mean −0.9.
    assert float(ExpectedShortfall(0.1).cash(pl)) == pytest.approx(0.9, abs=1e-6)


def test_expected_shortfall_gradient_falls_on_the_tail():
    pl = torch.tensor([3.0, -2.0, 1.0, -5.0], requires_grad=True)
    ExpectedShortfall(0.5).cash(pl).backward()
    assert pl.grad.tolist() == [0.0, -0.5, 0.0, -0.5]


def test_mean_variance():
    pl = _normal(0.2, 0.3)
    assert float(MeanVariance(2.0).cash(pl)) == pytest.approx(-0.2 + 2.0 * 0.09, abs=2e-3)


def test_measures_reduce_the_last_dimension():
    pl = torch.randn(3, 7, 100)
    for measure in (EntropicRisk(1.0), ExpectedShortfall(0.1), MeanVariance(0.5)):
        assert measure.cash(pl).shape == (3, 7)


def test_parse_criterion():
    assert parse_criterion("entropic:1").a == 1.0
    assert parse_criterion(" ES:0.25 ").p == 0.25
    assert parse_criterion("meanvar:0.5").lam == 0.5
    with pytest.raises(ValueError, match="unknown criterion"):
        parse_criterion("var:0.1")
    with pytest.raises(ValueError, match="must be a number"):
        parse_criterion("es:ten")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        parse_criterion("es:1.5")
    with pytest.raises(ValueError, match="> 0"):
        parse_criterion("entropic:0")


MEASURES = (EntropicRisk(1.0), EntropicRisk(5.0), ExpectedShortfall(0.1), MeanVariance(0.5))


@pytest.mark.parametrize("measure", MEASURES, ids=repr)
def test_cash_is_the_risk_a_certain_loss_of_one_costs_one(measure):
    """The sign convention: ``cash`` is ρ(PL), positive is bad (pfhedge's ``cash`` is −ρ)."""
    certain_loss = torch.full((1_000,), -1.0, dtype=torch.float64)
    certain_gain = -certain_loss
    assert float(measure.cash(certain_loss)) == pytest.approx(1.0, abs=1e-12)
    assert float(measure.cash(certain_gain)) == pytest.approx(-1.0, abs=1e-12)


@pytest.mark.parametrize("measure", MEASURES, ids=repr)
def test_cash_is_cash_invariant(measure):
    """Adding m of cash to every path lowers the risk by exactly m: ρ(PL + m) = ρ(PL) − m."""
    pl = _normal(0.0, 0.3, n=10_000)
    assert float(measure.cash(pl + 0.7)) == pytest.approx(float(measure.cash(pl)) - 0.7, abs=1e-9)


def test_cash_is_minus_pfhedges_cash_on_its_own_example():
    # pfhedge's ExpectedShortfall docstring: ExpectedShortfall(0.5) of pnl = -arange(4) has
    # loss (forward) 2.5 and cash -2.5. Ours returns its loss, the negative of its cash.
    pnl = -torch.arange(4.0)
    assert float(ExpectedShortfall(0.5).cash(pnl)) == 2.5
    # Same for EntropicRiskMeasure(a=1): loss 2.0539, cash -2.0539.
    assert float(EntropicRisk(1.0).cash(pnl)) == pytest.approx(2.0539, abs=1e-4)
