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
