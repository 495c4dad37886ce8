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


def test_minimum_variance_delta_recovers_a_known_spot_vol_relation() -> None:
    """Prices whose implied vol moves as Hull and White model it, Δσ = k·(ΔS/S)/√τ with
    k < 0: the fitted hedge is below BS delta at the money, and it halves the variance of the
    hedged position's one-step change (Hull and White's "gain", what the fit minimizes)
    against BS delta at the current vol."""
    from hedge_pipeline.hedging.baselines import fit_minimum_variance_delta
    from hedge_pipeline.hedging.simulator import Book, Episodes, rollout
    from hedge_pipeline.quant.torch_pricing import bs_greeks

    problem = HedgingProblem(book=Book(strikes=(100.0,)), s0=100.0, n_steps=20, maturity=20 / 252)
    g = torch.Generator().manual_seed(3)

    def episodes(n: int) -> tuple[Episodes, torch.Tensor]:
        steps = 0.012 * torch.randn(n, 20, generator=g, dtype=torch.float64)
        spot = 100.0 * torch.exp(torch.cat([torch.zeros(n, 1), steps.cumsum(1)], dim=1))
        tau = ((20 - torch.arange(21, dtype=torch.float64)) / 252).expand_as(spot)
        moves = -0.3 * steps / tau[:, 1:].clamp(min=1 / 252).sqrt()
        vol = (0.2 + torch.cat([torch.zeros(n, 1), moves.cumsum(1)], dim=1)).clamp(min=0.05)
        price = bs_greeks(spot, 100.0, tau, vol, is_call=True)["price"]
        ep = Episodes(spot, tau, vol[..., None], price[:, 0], price[:, -1], torch.zeros(n, 20, 0))
        return ep, price

    train, price = episodes(2000)
    mv = fit_minimum_variance_delta(problem, train, price)
    a, b, c = mv.coefficients
    assert a + b * 0.5 + c * 0.25 < 0
    test, test_price = episodes(2000)

    def one_step_variance(policy) -> float:
        hedges = rollout(problem, test, policy)[1]
        change = test_price.diff(dim=1) - hedges * test.spot.diff(dim=1)
        return float(change.var())

    assert one_step_variance(mv) < 0.6 * one_step_variance(BlackScholesDelta())


def test_minimum_variance_delta_needs_a_one_call_book() -> None:
    from hedge_pipeline.hedging.baselines import fit_minimum_variance_delta
    from hedge_pipeline.hedging.simulator import Book, simulate_paths

    problem = HedgingProblem(book=Book(strikes=(1.0,), is_call=(False,)))
    paths = simulate_paths(problem, 8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="book of one call"):
        fit_minimum_variance_delta(problem, paths, paths)
