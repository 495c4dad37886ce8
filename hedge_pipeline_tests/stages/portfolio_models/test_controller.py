"""Portfolio P&L, netting, the meta-controller's starting point and the objective."""

from __future__ import annotations

import pytest
import torch

from hedge_pipeline.hedging.baselines import BlackScholesDelta, BlackScholesDeltaGamma
from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.simulator import DELTA, pnl
from hedge_pipeline.quant.risk import parse_criterion
from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    MetaController,
    PortfolioProblem,
    code_features,
    fit_inputs,
    mark_to_market,
    meta_rollout,
    net_of_options,
    portfolio_pnl,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.evaluation import baseline_positions
from hedge_pipeline.stages.portfolio_models.objective import PortfolioObjective, diversity
from hedge_pipeline_tests.stages.portfolio_models.conftest import COST, two_books


def test_unnetted_positions_score_as_the_books_hedged_alone_and_netting_only_saves_costs():
    pp, ep = two_books()
    prop = proposals(pp, ep, [BlackScholesDelta(), BlackScholesDelta()])
    alone = sum(
        pnl(p, b, prop[..., c]) for c, (p, b) in enumerate(zip(pp.problems, ep.books, strict=True))
    )
    unnetted, unnetted_costs = portfolio_pnl(pp, ep, prop)
    torch.testing.assert_close(unnetted, alone)
    netted, netted_costs = portfolio_pnl(pp, ep, prop.sum(dim=-1))
    assert bool((netted_costs <= unnetted_costs + 1e-6).all())
    torch.testing.assert_close(netted - unnetted, unnetted_costs - netted_costs)
    # The marked path ends at the P&L.
    torch.testing.assert_close(mark_to_market(pp, ep, prop.sum(dim=-1))[:, -1], netted)


def test_an_absent_code_contributes_nothing():
    pp, ep = two_books(present=(1.0, 0.0))
    prop = proposals(pp, ep, [BlackScholesDelta(), BlackScholesDelta()])
    assert bool((prop[..., 1] == 0).all())
    only_a = pnl(pp.problems[0], ep.books[0], prop[..., 0])
    torch.testing.assert_close(portfolio_pnl(pp, ep, prop.sum(dim=-1))[0], only_a)


def test_controller_starts_between_specialists_and_delta_and_a_wide_band_freezes_the_hedge():
    pp, ep = two_books(256)
    with torch.no_grad():
        prop = proposals(pp, ep, [BlackScholesDelta(), BlackScholesDelta()]) * 0.5
        delta = baseline_positions(pp, ep)["bs_delta"]
        meta = MetaController(n_context=0, initial_band=1e-9, initial_weight=0.25)
        held = meta_rollout(pp, ep, prop, meta).positions
        torch.testing.assert_close(held, 0.25 * prop.sum(-1) + 0.75 * delta)
        wide = MetaController(n_context=0, initial_band=10.0, initial_weight=0.25)
        frozen = meta_rollout(pp, ep, prop, wide).positions
    assert bool((frozen == 0).all())  # never leaves its starting (empty) position


def test_a_band_head_gone_wild_freezes_the_hedge_with_finite_gradients():
    """The band is exp(network output): once that output passes ~88 a float32 band is inf, and
    the band's gradient (0 where it does not bind) times inf was NaN. A joint-model run hit
    it (TrainingDiverged: gradient norm nan); the exponent is now capped where the band
    already means "never trade"."""
    pp, ep = two_books(64)
    with torch.no_grad():
        prop = proposals(pp, ep, [BlackScholesDelta(), BlackScholesDelta()])
    meta = MetaController(n_context=0)
    fit_inputs(meta, pp, ep, prop)
    with torch.no_grad():
        meta.band_head[-1].bias.fill_(200.0)
    held = meta_rollout(pp, ep, prop, meta).positions
    assert bool((held == 0).all())  # an infinitely wide band never trades
    loss = -portfolio_pnl(pp, ep, held)[0].mean()
    loss.backward()
    for name, parameter in meta.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_maximum_position_is_enforced():
    pp, ep = two_books(64)
    capped = PortfolioProblem(pp.codes, pp.problems, cost=COST, max_position=0.2)
    prop = torch.full((64, pp.n_steps, 2), 5.0)
    with torch.no_grad():
        held = meta_rollout(capped, ep, prop, MetaController(n_context=0)).positions
    assert float(held.abs().max()) == pytest.approx(0.2)


def test_objective_penalizes_var_breaches_and_rewards_diversity():
    pnl_ = torch.linspace(-3.0, 1.0, 1000)
    costs = torch.zeros(1000)
    present = torch.ones(1000, 2)
    equal = torch.ones(1000, 1, 2)
    lopsided = torch.tensor([1.0, 0.0]).expand(1000, 1, 2)
    assert float(diversity(equal, present)) == pytest.approx(1.0)
    assert float(diversity(lopsided, present)) == pytest.approx(0.0, abs=1e-6)
    risk = parse_criterion("es:0.1")
    plain = PortfolioObjective(risk)
    limited = PortfolioObjective(risk, var_limit=1.0, risk_penalty=2.0)
    base = float(plain.loss(pnl_, costs, equal, present))
    # VaR95 of the loss is about 2.8, 1.8 over the limit
    assert float(limited.loss(pnl_, costs, equal, present)) == pytest.approx(base + 3.6, abs=0.02)
    bonus = PortfolioObjective(risk, diversification_bonus=0.5)
    assert float(bonus.loss(pnl_, costs, equal, present)) == pytest.approx(base - 0.5)
    with pytest.raises(ValueError, match="var_level"):
        PortfolioObjective(risk, var_level=0.3)


def test_with_hedge_options_each_code_keeps_its_option_and_the_controller_nets_the_rest():
    """Delta-gamma specialists: their underlying legs already net their options' delta, so a
    controller mixing them with the books' delta *net of those options* changes nothing, and
    the options pass through to the P&L."""
    pp, ep = two_books(options=True)
    specialists = [BlackScholesDeltaGamma(p) for p in pp.problems]
    prop = proposals(pp, ep, specialists)
    assert prop.shape == (ep.n_paths, pp.n_steps, 2, 2)
    meta = MetaController(n_context=0, initial_band=1e-9, initial_weight=0.25)
    fit_inputs(meta, pp, ep, prop)
    with torch.no_grad():
        r = meta_rollout(pp, ep, prop, meta)
    torch.testing.assert_close(r.options, prop[..., 1])
    torch.testing.assert_close(r.positions, prop[..., 0].sum(dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(r.pnl, portfolio_pnl(pp, ep, Hedge(r.positions, r.options))[0])
    # The books' delta net of the options is the delta-gamma hedge's underlying leg.
    feats, _ = code_features(pp, ep)
    net = net_of_options(feats, prop[..., 1])
    torch.testing.assert_close(net[..., DELTA], prop[..., 0], atol=1e-5, rtol=0)


def test_joint_training_reaches_the_specialists_option_legs():
    """The portfolio loss flows into each specialist's option position (pathwise)."""
    pp, ep = two_books(n=64, options=True)
    specialists = [make_policy("mlp", p, width=8, n_layers=2) for p in pp.problems]
    for policy in specialists:  # a non-zero last layer, so every weight gets a gradient
        torch.nn.init.normal_(policy.net[-1].weight, std=0.1)
    meta = MetaController(n_context=0)
    r = meta_rollout(pp, ep, proposals(pp, ep, specialists), meta)
    (-r.pnl.mean()).backward()
    for policy in specialists:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
