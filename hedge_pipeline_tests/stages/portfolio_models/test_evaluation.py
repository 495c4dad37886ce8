"""The portfolio risk table's readings of the tail: costless rows and the tail by front code."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from hedge_pipeline.hedging.baselines import BlackScholesDeltaGamma
from hedge_pipeline.hedging.simulator import pnl, rollout
from hedge_pipeline.quant.risk import ExpectedShortfall, parse_criterion
from hedge_pipeline.stages.portfolio_models.controller import Hedge, PortfolioProblem, portfolio_pnl
from hedge_pipeline.stages.portfolio_models.evaluation import (
    TIE_TOLERANCE,
    baseline_positions,
    fit_portfolio_mv,
    front_codes,
    score,
    tail_by_front,
    win_rate,
)
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes
from hedge_pipeline_tests.stages.portfolio_models.conftest import two_books


def test_the_front_code_is_each_windows_first_present_code():
    present = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    ep = PortfolioEpisodes(spot=torch.zeros(4, 2), present=present, books=())
    assert front_codes(ep).tolist() == [1, 0, 2, 0]


def test_tail_by_front_splits_es10_into_each_front_codes10_contribution():
    # 20 windows: the tail is the 2 worst, -9 (front B) and -7 (front A).
    pnl = torch.tensor([-9.0, -7.0, -5.0] + [1.0] * 17)
    front = torch.tensor([1, 0, 1] + [0] * 17)
    tail = tail_by_front(pnl, front, ("A", "B"))
    assert tail == {
        "B": {"windows": 1, "mean_loss": 9.0, "es10_contribution": 4.5},
        "A": {"windows": 1, "mean_loss": 7.0, "es10_contribution": 3.5},
    }
    assert list(tail) == ["B", "A"]  # largest contribution first
    es10 = float(ExpectedShortfall(0.1).cash(pnl))
    assert sum(row["es10_contribution"] for row in tail.values()) == pytest.approx(es10)
    # Codes with no window in the tail are left out; 21 windows make a tail of 3 (⌈2.1⌉).
    tail = tail_by_front(torch.cat([pnl, torch.ones(1)]), torch.cat([front, front[:1]]), "AB")
    assert tail["B"]["windows"] == 2 and tail["A"]["windows"] == 1
    assert tail["B"]["mean_loss"] == pytest.approx(7.0)


def test_costless_rows_score_the_same_positions_traded_for_free():
    pp, ep = two_books()
    held = baseline_positions(pp, ep)
    risk = parse_criterion("es:0.1")
    metrics, pnls = score(pp, ep, held, risk, float("inf"), costless=("bs_delta",))
    free, paid = metrics["bs_delta_without_costs"], metrics["bs_delta"]
    assert set(metrics) == {*held, "bs_delta_without_costs"}
    assert free["total_cost"] == 0.0 and paid["total_cost"] > 0.0
    # Same positions: the P&L differs by exactly the costs paid.
    gap = pnls["bs_delta_without_costs"] - pnls["bs_delta"]
    assert float(gap.mean()) == pytest.approx(paid["total_cost"], rel=1e-5)
    assert bool((gap >= 0).all()) and free["es10"] < paid["es10"]
    # The win rate is still against BS delta with costs: free trading wins wherever it pays
    # more than float noise in costs.
    scale = torch.maximum(pnls["bs_delta_without_costs"].abs(), pnls["bs_delta"].abs())
    wins = gap.double() > TIE_TOLERANCE * scale.double().clamp(min=1.0)
    assert free["win_rate"] == float(wins.double().mean()) > 0.5


def test_a_hedger_against_itself_or_a_copy_scores_no_wins():
    pp, ep = two_books()
    held = baseline_positions(pp, ep)
    delta = held["bs_delta"]
    # The reference's positions, as a copy and wrapped as a Hedge (another code path).
    positions = held | {"copy": delta.clone(), "as_hedge": Hedge(delta)}
    metrics, _ = score(pp, ep, positions, parse_criterion("es:0.1"), float("inf"))
    assert metrics["bs_delta"]["win_rate"] == 0.0
    assert metrics["copy"]["win_rate"] == 0.0
    assert metrics["as_hedge"]["win_rate"] == 0.0
    # Float noise on top of the reference's P&L is a tie, not a win.
    noisy = pnls_of(pp, ep, delta) * (1 + 1e-8)
    assert win_rate(noisy, pnls_of(pp, ep, delta)) == 0.0


def pnls_of(pp: PortfolioProblem, ep: PortfolioEpisodes, held: torch.Tensor) -> torch.Tensor:
    return portfolio_pnl(pp, ep, held)[0].double()


def test_delta_gamma_baseline_is_each_codes_delta_gamma_hedge_with_the_underlying_netted():
    pp, ep = two_books(options=True)
    hedge = baseline_positions(pp, ep)["bs_delta_gamma"]
    legs = [
        rollout(p, book, BlackScholesDeltaGamma(p))[1]
        for p, book in zip(pp.problems, ep.books, strict=True)
    ]
    torch.testing.assert_close(hedge.underlying, legs[0][..., 0] + legs[1][..., 0])
    torch.testing.assert_close(hedge.options, torch.stack([leg[..., 1] for leg in legs], -1))
    # Netting only saves the underlying's costs: per code alone, the P&L is the codes' sum.
    alone = sum(pnl(p, b, leg) for p, b, leg in zip(pp.problems, ep.books, legs, strict=True))
    unnetted = Hedge(torch.stack([leg[..., 0] for leg in legs], -1), hedge.options)
    torch.testing.assert_close(portfolio_pnl(pp, ep, unnetted)[0], alone)
    netted_pnl, netted_costs = portfolio_pnl(pp, ep, hedge)
    assert bool((netted_pnl >= portfolio_pnl(pp, ep, unnetted)[0] - 1e-6).all())
    # The options take gamma off: far less risk than delta hedging with the underlying alone.
    metrics, _ = score(pp, ep, baseline_positions(pp, ep), parse_criterion("es:0.1"), 1.0)
    assert metrics["bs_delta_gamma"]["es10"] < metrics["bs_delta"]["es10"]
    assert netted_costs.mean() > 0


def test_a_portfolio_hedges_with_options_for_every_code_or_for_none():
    pp, _ = two_books(options=True)
    with pytest.raises(ValueError, match="either every code's specialist trades a hedge option"):
        PortfolioProblem(pp.codes, (pp.problems[0], replace(pp.problems[1], instrument=None)))


def test_the_minimum_variance_delta_is_bs_delta_where_vols_stay_and_less_where_they_fall():
    """Hull and White on the portfolio (a call book and a put book): on constant-vol paths the
    fitted correction is noise around 0; where each option's implied vol falls by 1 per unit
    of log return, ΔV = vega·Δσ = −φ(d1)·√τ·ΔS, so the correction at the money is about
    −√τ ≈ −0.24 (τ: E1's 30 days of 250, mid-life), and the baseline holds less than BS delta
    in calls and more short in puts. Coefficients of 0 give BS delta exactly; none, no row."""
    pp, ep = two_books()
    assert "mv_delta" not in baseline_positions(pp, ep)
    a, b, c = fit_portfolio_mv(pp, ep)
    assert abs(a + b * 0.5 + c * 0.25) < 0.02
    zero = baseline_positions(replace(pp, mv_delta=(0.0, 0.0, 0.0)), ep)
    assert torch.equal(zero["mv_delta"], zero["bs_delta"])

    def skewed(book):
        return book._replace(vol=(0.2 - torch.log(book.spot)).clamp(min=0.05).unsqueeze(-1))

    skew = ep._replace(books=tuple(skewed(b) for b in ep.books))
    a, b, c = fit_portfolio_mv(pp, skew)
    assert -0.30 < a + b * 0.5 + c * 0.25 < -0.18
    held = baseline_positions(replace(pp, mv_delta=(a, b, c)), skew)
    bs = baseline_positions(pp, skew)["bs_delta"]
    # Near the money both books' corrections are negative: less long the call, more short.
    near = (skew.spot[:, :-1] - 1.0).abs() < 0.02
    assert bool((held["mv_delta"][near] < bs[near]).all())
