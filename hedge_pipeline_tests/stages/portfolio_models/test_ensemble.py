"""The ensemble's turbulence guard: what it swaps in a storm, and what it keeps."""

from __future__ import annotations

from dataclasses import replace

import torch

from hedge_pipeline.hedging.deep_hedging import make_policy
from hedge_pipeline.hedging.simulator import DELTA, OPTION_DELTA, VOLATILITY
from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    MetaController,
    code_features,
    fit_inputs,
    proposals,
)
from hedge_pipeline.stages.portfolio_models.ensemble import (
    HedgeEnsemble,
    ensemble_es10,
    guard_if_it_helps,
    guarded,
)
from hedge_pipeline.stages.portfolio_models.evaluation import baseline_positions
from hedge_pipeline.stages.portfolio_models.joint import JointModel
from hedge_pipeline.stages.portfolio_models.stage import EnsembleInfo
from hedge_pipeline.stages.portfolio_models.train_ensemble import TURBULENCE_COLUMN, ensemble_of
from hedge_pipeline_tests.stages.portfolio_models.conftest import two_books


def _storm(ep) -> torch.Tensor:
    """A guard set on every other decision of every window."""
    steps = ep.books[0].context.shape[1]
    return (torch.arange(steps) % 2 == 0).expand(ep.n_paths, -1)


def _with_index(pp, ep, storm):
    """The books with one context column, an index 1 where ``storm`` and 0 elsewhere."""
    problems = tuple(replace(p, context=(VOLATILITY,)) for p in pp.problems)
    index = storm.to(ep.spot.dtype).unsqueeze(-1)
    books = tuple(b._replace(context=index.clone()) for b in ep.books)
    return replace(pp, problems=problems), ep._replace(books=books)


def _member(pp, ep, bias: float) -> JointModel:
    """A joint model whose specialists' corrections to delta-gamma are random (std 0.3)
    plus ``bias``: a member a little off the analytic hedge, or (bias 2) far off it."""
    torch.manual_seed(0)
    specialists = [make_policy("mlp", p, width=8, n_layers=2) for p in pp.problems]
    for policy in specialists:
        torch.nn.init.normal_(policy.net[-1].weight, std=0.3)
        torch.nn.init.constant_(policy.net[-1].bias, bias)
    with torch.no_grad():
        prop = proposals(pp, ep, specialists)
    meta = MetaController(n_context=1)
    fit_inputs(meta, pp, ep, prop)
    return JointModel(meta, specialists)


def test_the_guard_keeps_the_members_options_and_hedges_only_the_rest_in_the_underlying():
    pp, ep = two_books(64, options=True)
    options = torch.linspace(-1.0, 1.0, ep.n_paths * pp.n_steps * 2).reshape(-1, pp.n_steps, 2)
    held = Hedge(torch.full((ep.n_paths, pp.n_steps), 7.0), options)
    guard = _storm(ep)
    out = guarded(pp, ep, held, guard)
    assert torch.equal(out.options, options)
    feats, _ = code_features(pp, ep)
    net = ((feats[..., DELTA] - options * feats[..., OPTION_DELTA]) * ep.present[:, None]).sum(-1)
    torch.testing.assert_close(out.underlying[guard], net[guard])
    assert torch.equal(out.underlying[~guard], held.underlying[~guard])


def test_without_hedge_options_the_guard_holds_bs_delta():
    pp, ep = two_books(64)
    held = Hedge(torch.zeros(ep.n_paths, pp.n_steps))
    out = guarded(pp, ep, held, torch.ones(ep.n_paths, pp.n_steps, dtype=torch.bool))
    assert out.options is None
    torch.testing.assert_close(out.underlying, baseline_positions(pp, ep)["bs_delta"])


def test_an_ensemble_in_a_storm_trades_no_option_its_members_would_not():
    """Specialists with hedge options: the guarded ensemble holds the members' options, so the
    guard adds no option trade (and pays no spread) of its own; only the underlying moves, to
    the books' delta net of those options."""
    pp, ep = _with_index(*two_books(64, options=True), _storm(two_books(64)[1]))
    member = _member(pp, ep, bias=0.0)  # corrections away from delta-gamma: work for the guard
    calm = HedgeEnsemble([member], torch.ones(1), 2.0, 0)
    guarded_ensemble = HedgeEnsemble([member], torch.ones(1), 0.5, 0)
    with torch.no_grad():
        held, never = calm.positions(pp, ep)
        out, guard = guarded_ensemble.positions(pp, ep)
    assert not never.any() and torch.equal(guard, _storm(ep))
    torch.testing.assert_close(out.options, held.options)
    assert torch.equal(out.underlying[~guard], held.underlying[~guard])
    feats, _ = code_features(pp, ep)
    net = feats[..., DELTA] - held.options * feats[..., OPTION_DELTA]
    torch.testing.assert_close(out.underlying[guard], (net * ep.present[:, None]).sum(-1)[guard])
    assert not torch.allclose(out.underlying[guard], held.underlying[guard], atol=1e-3)


def test_the_guard_is_kept_only_where_the_validation_windows_say_it_helps():
    """Against a member far off the analytic hedge in turbulence on every decision, the
    guard (BS delta there) lowers ES10 and is kept. Against a member close to it, with the
    index set on every other decision, the guard's switching back and forth costs more than
    it saves and is dropped. On calm windows it never fires, the two tie, and it is kept.
    Each ES10 reported is the one its ensemble's positions give."""
    pp, ep = two_books(256)
    always = torch.ones(ep.n_paths, pp.n_steps, dtype=torch.bool)
    pp, stormy = _with_index(pp, ep, always)
    far = _member(pp, stormy, bias=2.0)
    kept, es10 = guard_if_it_helps(pp, stormy, [far], torch.ones(1), 0.5, 0)
    assert kept.turbulence_column == 0 and es10["guard"] < es10["no_guard"]
    assert es10["guard"] == ensemble_es10(pp, stormy, kept)
    assert es10["no_guard"] == ensemble_es10(
        pp, stormy, HedgeEnsemble([far], torch.ones(1), 0.5, None)
    )

    pp, choppy = _with_index(pp, ep, _storm(ep))
    close = _member(pp, choppy, bias=0.0)
    dropped, es10 = guard_if_it_helps(pp, choppy, [close], torch.ones(1), 0.5, 0)
    assert dropped.turbulence_column is None and es10["no_guard"] < es10["guard"]
    _, guard = dropped.positions(pp, choppy)
    assert not guard.any() and es10["no_guard"] == ensemble_es10(pp, choppy, dropped)

    calm, es10 = guard_if_it_helps(pp, choppy, [close], torch.ones(1), 2.0, 0)
    assert calm.turbulence_column == 0 and es10["guard"] == es10["no_guard"]


def test_a_registered_spec_rebuilds_the_guard_it_chose():
    """``ensemble_of`` (serving and ``load_ensemble``) applies the guard only if the version
    kept it; a spec registered before the choice existed has no ``guard`` and had one."""
    pp, ep = two_books(8)
    pp, stormy = _with_index(pp, ep, _storm(ep))
    member = _member(pp, stormy, bias=0.0)
    before = {"joint_versions": [1], "weights": [1.0], "validation_risk": [1.0],
              "turbulence_threshold": 0.5, "turbulence_quantile": 0.99}  # fmt: skip
    old = EnsembleInfo.model_validate(before)
    assert old.guard and ensemble_of([member], old).turbulence_column == TURBULENCE_COLUMN
    dropped = EnsembleInfo.model_validate(before | {"guard": False})
    assert ensemble_of([member], dropped).turbulence_column is None
