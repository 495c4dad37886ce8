"""What the portfolio stages share: a curriculum phase's costs."""

from __future__ import annotations

import torch

from hedge_pipeline.stages.portfolio_models.controller import Hedge, portfolio_pnl
from hedge_pipeline.stages.portfolio_models.stage import at_costs
from hedge_pipeline_tests.stages.portfolio_models.conftest import two_books


def test_a_phase_at_half_costs_pays_half_of_every_cost_the_options_spreads_included():
    pp, ep = two_books(64, options=True)
    steps = torch.arange(pp.n_steps, dtype=ep.spot.dtype)
    options = (steps % 2).expand(ep.n_paths, 2, -1).transpose(1, 2).contiguous()
    underlying = (steps % 3).expand(ep.n_paths, -1)
    for held in (Hedge(torch.zeros_like(underlying), options), Hedge(underlying, options)):
        _, full = portfolio_pnl(pp, ep, held)
        _, half = portfolio_pnl(at_costs(pp, 0.5), ep, held)
        assert bool((full > 0).all())
        torch.testing.assert_close(half, 0.5 * full)
    assert at_costs(at_costs(pp, 0.5), 0.5).spread_scale == 0.25
