"""The portfolio's risk table: every hedger, every stage, on the same windows.

Baselines trade the netted portfolio position: no hedge, Black–Scholes delta (the sum of the
books' deltas) and a Whalley–Wilmott band around it, sized by the portfolio's dollar gamma.
With hedge options a fourth, ``bs_delta_gamma``: each code's book delta-gamma neutral with its
option (:func:`~hedge_pipeline.hedging.baselines.delta_gamma`, capped as the specialists'
baseline is), the underlying legs netted. Where the portfolio's problem carries fitted Hull and
White coefficients (the stages fit them on the training windows), ``mv_delta``: every option's
BS delta plus the expected effect of the spot's move on its implied vol, the analytic hedge to
beat where implied vol moves with the spot (a skew, a leverage effect).
The columns (:func:`portfolio_metrics`), per window of P&L X (the hedged portfolio, held from
the window's first decision to its end):

* ``price``: the criterion's cash value of X; ``es10``: expected shortfall at 10 %;
  ``entropic``: the entropic price with risk aversion 1;
* ``sharpe``: mean/std of X; ``sortino``: mean / downside deviation (root mean of min(X,0)²);
  both per window, not annualized (windows overlap in replay);
* ``max_drawdown``: the mean over windows of the largest peak-to-trough fall of the marked
  P&L path (:func:`~hedge_pipeline.stages.portfolio_models.controller.mark_to_market`); ``calmar``:
  mean P&L / max_drawdown;
* ``win_rate``: share of windows where the hedger ends above Black–Scholes delta on the same
  window by more than float noise (:func:`win_rate`: a tie is not a win); ``profit_rate``:
  share with X > 0;
* ``var_compliance``: share of windows whose loss stays within the VaR limit;
* ``total_cost``: mean transaction cost per window.

Two readings of the tail go with it, because a tail measure over a few hundred replayed
windows is decided by a few events and a user needs to see which:

* ``<hedger>_without_costs`` rows (:func:`score`'s ``costless``): the same positions traded
  for free. For BS delta this is how far any hedge that only trades the delta less often could
  go: the distance from ``bs_delta`` to ``bs_delta_without_costs`` is all that cost savings
  can win; what remains is risk the underlying cannot hedge (gamma over overnight gaps).
* :func:`tail_by_front`: the worst 10 % of windows (ES10's own tail) by front code, each
  code's count, mean loss and additive contribution to ES10 (the contributions add up to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from hedge_pipeline.hedging.baselines import (
    delta_gamma,
    fit_minimum_variance,
    minimum_variance_correction,
    option_cap,
    whalley_wilmott_width,
)
from hedge_pipeline.hedging.comparison import time_blocks
from hedge_pipeline.hedging.simulator import DELTA, SCALED_GAMMA
from hedge_pipeline.quant.risk import EntropicRisk, ExpectedShortfall, RiskMeasure
from hedge_pipeline.quant.torch_pricing import bs_greeks
from hedge_pipeline.stages.portfolio_models.controller import (
    Hedge,
    PortfolioProblem,
    code_features,
    mark_to_market,
    portfolio_pnl,
    split_proposals,
)
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes

__all__ = [
    "analytic_hedge",
    "baseline_positions",
    "fit_portfolio_mv",
    "front_codes",
    "mv_delta_positions",
    "portfolio_delta",
    "portfolio_metrics",
    "score",
    "specialist_rows",
    "tail_by_front",
    "win_rate",
    "window_blocks",
]

REFERENCE = "bs_delta"


def portfolio_delta(ep: PortfolioEpisodes, feats: Tensor) -> Tensor:
    """Σ of the present books' Black–Scholes deltas, from the codes' features
    (:func:`code_features`). Shape: feats (n, T, C, ·) → (n_paths, n_steps)."""
    return (feats[..., DELTA] * ep.present.unsqueeze(1)).sum(dim=-1)


def delta_gamma_hedge(pp: PortfolioProblem, ep: PortfolioEpisodes, feats: Tensor) -> Hedge:
    """Every present book delta-gamma neutral with its own hedge option, the underlying legs
    netted (module docstring), from the codes' features (:func:`code_features`).

    Shape: feats (n, T, C, 6) → Hedge((n, T), (n, T, C))
    """
    n, steps, _, columns = feats.shape
    legs = (
        torch.stack(
            [
                delta_gamma(feats[:, :, c].reshape(-1, columns), option_cap(p)).reshape(n, steps, 2)
                for c, p in enumerate(pp.problems)
            ],
            dim=2,
        )
        * ep.present[:, None, :, None]
    )
    return Hedge(legs[..., 0].sum(dim=-1), legs[..., 1])


def analytic_hedge(pp: PortfolioProblem, ep: PortfolioEpisodes, feats: Tensor) -> Hedge:
    """The textbook hedge with the portfolio's instruments, from the codes' features: BS
    delta-gamma with hedge options, BS delta without."""
    if pp.with_options:
        return delta_gamma_hedge(pp, ep, feats)
    return Hedge(portfolio_delta(ep, feats))


def _option_terms(pp: PortfolioProblem, ep: PortfolioEpisodes) -> list[dict[str, Tensor]]:
    """Per code, each option's Black–Scholes ``delta``, and the ``call_price`` and
    ``call_delta`` of the call of its strike (a put's plus the spot, less the strike, and plus
    one: put–call parity at zero rates, where Hull and White's regression is stated), at every
    bar at its own implied vol, and its ``weight``, broadcast over bars.
    Shape: each (n, T + 1, n_options)."""
    terms = []
    for problem, book in zip(pp.problems, ep.books, strict=True):
        options = problem.book
        dtype = book.spot.dtype
        calls = torch.tensor(options.is_call)
        g = bs_greeks(
            book.spot.unsqueeze(-1),
            torch.tensor(options.strikes, dtype=dtype),
            book.tau.unsqueeze(-1),
            book.vol,
            is_call=calls,
        )
        strikes = torch.tensor(options.strikes, dtype=dtype)
        terms.append(
            {
                "call_price": torch.where(
                    calls, g["price"], g["price"] + book.spot.unsqueeze(-1) - strikes
                ),
                "delta": g["delta"],
                "call_delta": torch.where(calls, g["delta"], g["delta"] + 1.0),
                "weight": torch.tensor(options.weights, dtype=dtype),
            }
        )
    return terms


def fit_portfolio_mv(pp: PortfolioProblem, ep: PortfolioEpisodes) -> tuple[float, float, float]:
    """Hull and White's (a, b, c) fitted on every step of every present option of ``ep`` (the
    training windows: the coefficients are the baseline's training), by
    :func:`~hedge_pipeline.hedging.baselines.fit_minimum_variance`: one smile dynamic for the
    underlying, shared by its codes as their implied vols are.

    Raises:
        ValueError: fewer than three steps with a delta to fit on.
    """
    deltas, spots, values, used = [], [], [], []
    for c, t in enumerate(_option_terms(pp, ep)):
        deltas.append(t["call_delta"][:, :-1].flatten())
        steps = t["call_price"].diff(dim=1)
        spots.append(ep.books[c].spot.diff(dim=1).unsqueeze(-1).expand_as(steps).flatten())
        values.append(steps.flatten())
        used.append((ep.present[:, c, None, None] > 0).expand_as(steps).flatten())
    return fit_minimum_variance(
        torch.cat(deltas), torch.cat(spots), torch.cat(values), torch.cat(used)
    )


def mv_delta_positions(pp: PortfolioProblem, ep: PortfolioEpisodes) -> Tensor:
    """The portfolio's minimum-variance delta: every present option's BS delta plus Hull and
    White's correction (``pp.mv_delta``), weighted as its book holds it, summed over codes.
    Shape: → (n_paths, n_steps)."""
    assert pp.mv_delta is not None
    total = torch.zeros_like(ep.spot[:, :-1])
    for c, t in enumerate(_option_terms(pp, ep)):
        delta, call_delta = t["delta"][:, :-1], t["call_delta"][:, :-1]
        per_option = delta + minimum_variance_correction(pp.mv_delta, call_delta)
        total = total + (per_option * t["weight"]).sum(dim=-1) * ep.present[:, c, None]
    return total


def specialist_rows(prop: Tensor) -> dict[str, Hedge]:
    """The specialists' proposals (:func:`.controller.proposals`)
    as two rows: each code trading for itself (``specialists``) and their underlying positions
    summed into one trade (``specialists_netted``); options are each code's either way."""
    own = split_proposals(prop)
    return {
        "specialists": own,
        "specialists_netted": Hedge(own.underlying.sum(dim=-1), own.options),
    }


def baseline_positions(
    pp: PortfolioProblem, ep: PortfolioEpisodes, risk_aversion: float = 1.0
) -> dict[str, Tensor | Hedge]:
    """Positions of the baselines on ``ep`` (module docstring): (n, T) in the underlying, and
    ``bs_delta_gamma`` a :class:`Hedge` with options."""
    feats, _ = code_features(pp, ep)
    present = ep.present.unsqueeze(1)
    delta = portfolio_delta(ep, feats)
    sigma = torch.tensor([p.sigma for p in pp.problems], dtype=ep.spot.dtype)
    tau = torch.stack([b.tau[:, :-1] for b in ep.books], dim=-1).clamp(min=1e-12)
    # S·Γ of each book from its scaled gamma S·Γ·σ·√τ; the portfolio's is their sum.
    spot_gamma = (feats[..., SCALED_GAMMA] / (sigma * tau.sqrt()) * present).sum(dim=-1)
    width = whalley_wilmott_width(pp.cost, ep.spot[:, :-1], spot_gamma, risk_aversion)
    band, prev = [], torch.zeros_like(delta[:, 0])
    for t in range(pp.n_steps):
        prev = torch.clamp(prev, delta[:, t] - width[:, t], delta[:, t] + width[:, t])
        band.append(prev)
    baselines: dict[str, Tensor | Hedge] = {
        "no_hedge": torch.zeros_like(delta),
        "bs_delta": delta,
        "whalley_wilmott": torch.stack(band, dim=1),
    }
    if pp.with_options:
        baselines["bs_delta_gamma"] = delta_gamma_hedge(pp, ep, feats)
    if pp.mv_delta is not None:
        baselines["mv_delta"] = mv_delta_positions(pp, ep)
    return baselines


#: Relative size of a P&L difference that float32 rounding can make (a tie below it).
TIE_TOLERANCE = 1e-6


def win_rate(pnl: Tensor, reference: Tensor) -> float:
    """Share of windows where ``pnl`` beats ``reference`` by more than float noise.

    Two hedgers that hold the same positions on a window (a specialist proposing exactly BS
    delta, a band that never binds) reach the same P&L through different float32 sums; a raw
    ``pnl > reference`` turns those ties into coin flips. A window is a win only by more than
    :data:`TIE_TOLERANCE` times the larger magnitude of the two P&Ls (at least 1 unit of P&L).

    >>> import torch
    >>> ref = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    >>> win_rate(ref, ref), win_rate(ref + 1e-9, ref)
    (0.0, 0.0)
    >>> win_rate(torch.tensor([1.5, -2.0, 0.4, 3.0], dtype=torch.float64), ref)
    0.25
    """
    pnl, reference = pnl.double(), reference.double()
    scale = torch.maximum(pnl.abs(), reference.abs()).clamp(min=1.0)
    return float((pnl - reference > TIE_TOLERANCE * scale).double().mean())


def portfolio_metrics(
    path: Tensor,
    pnl: Tensor,
    costs: Tensor,
    risk: RiskMeasure,
    var_limit: float,
    reference: Tensor,
) -> dict[str, float]:
    """The columns of the module docstring from a marked P&L path (n, T + 1), the P&L as
    :func:`.controller.portfolio_pnl` computes it (n,), the costs (n,) and the reference
    hedger's P&L computed the same way (n,), in float64. Every figure of the window's end
    reads ``pnl``, the one P&L the report's comparisons and plots read too (the path's last
    column is the same P&L summed in another order); the drawdowns read the path."""
    path, costs = path.double(), costs.double()
    pl = pnl.double()
    mean, std = float(pl.mean()), float(pl.std()) if pl.numel() > 1 else 0.0
    downside = float(pl.clamp(max=0.0).square().mean().sqrt())
    drawdown = float((path.cummax(dim=1).values - path).max(dim=1).values.mean())
    return {
        "price": float(risk.cash(pl)),
        "mean_pl": mean,
        "std_pl": std,
        "es10": float(ExpectedShortfall(0.1).cash(pl)),
        "entropic": float(EntropicRisk(1.0).cash(pl)),
        "sharpe": mean / std if std > 0 else float("nan"),
        "sortino": mean / downside if downside > 0 else float("nan"),
        "max_drawdown": drawdown,
        "calmar": mean / drawdown if drawdown > 0 else float("nan"),
        "win_rate": win_rate(pnl, reference),
        "profit_rate": float((pl > 0).double().mean()),
        "var_compliance": float((-pl <= var_limit).double().mean()),
        "total_cost": float(costs.mean()),
    }


def score(
    pp: PortfolioProblem,
    ep: PortfolioEpisodes,
    positions: Mapping[str, Tensor | Hedge],
    risk: RiskMeasure,
    var_limit: float,
    costless: Sequence[str] = (),
) -> tuple[dict[str, dict[str, float]], dict[str, Tensor]]:
    """Metrics and P&L per hedger, from each hedger's positions: a :class:`Hedge`, or its
    underlying alone, (n, T) netted or (n, T, C) each code trading for itself. ``positions``
    must hold ``bs_delta`` (the win-rate reference, with costs). Each hedger named in
    ``costless`` is scored again at zero costs, as a ``<name>_without_costs`` row (module
    docstring)."""
    free = replace(pp, cost=0.0, slippage=0.0, fixed_fee=0.0, spread_scale=0.0)
    runs = [(name, pp, held) for name, held in positions.items()]
    runs += [(f"{name}_without_costs", free, positions[name]) for name in costless]
    with torch.no_grad():
        scored = {name: portfolio_pnl(problem, ep, held) for name, problem, held in runs}
        reference = scored[REFERENCE][0]
        metrics = {
            name: portfolio_metrics(mark_to_market(problem, ep, held), *scored[name], risk,
                                    var_limit, reference)
            for name, problem, held in runs
        }  # fmt: skip
    return metrics, {name: pnl for name, (pnl, _) in scored.items()}


def front_codes(ep: PortfolioEpisodes) -> Tensor:
    """Each window's front code (index into the codes): its first present code, since the
    portfolio's codes are in expiry order. Shape: → (n_paths,)"""
    return ep.present.argmax(dim=1)  # the first of equal maxima


def window_blocks(ep: PortfolioEpisodes) -> Tensor:
    """Each window's cluster for the bootstrap of :mod:`~hedge_pipeline.hedging.comparison`:
    its front code and the block of one window's length, in the front code's time to expiry,
    that it starts in.

    Replayed windows start one bar apart, so neighbours share almost all of their path; a
    block holds the windows that overlap the most and is resampled whole. Simulated windows
    from nearby start states fall in one block too, which only widens the interval.
    Shape: → (n_paths,) integer ids.
    """
    front = front_codes(ep)
    tau = torch.stack([b.tau for b in ep.books], dim=1)  # (n, C, T + 1)
    rows = torch.arange(ep.n_paths)
    block = time_blocks(tau[rows, front, 0], tau[rows, front, -1])
    return front * (int(block.max()) + 1) + block


def tail_by_front(
    pnl: Tensor, front: Tensor, codes: Sequence[str], p: float = 0.1
) -> dict[str, dict[str, float]]:
    """The worst ``p`` of the windows by front code, largest contribution first (module
    docstring).

    The tail is :class:`~hedge_pipeline.quant.risk.ExpectedShortfall`'s: the ⌈p·n⌉ lowest
    P&Ls, so the ``es10_contribution`` entries (a code's tail losses over ⌈p·n⌉) add up to
    ES(p), ES10 at the default ``p``.
    ``windows`` counts the code's windows in the tail, ``mean_loss`` their mean loss.
    """
    k = ExpectedShortfall(p).tail_size(pnl.numel())
    losses, worst = torch.topk(-pnl.double(), k)
    fronts = front[worst]
    rows = {}
    for f in fronts.unique().tolist():
        mine = losses[fronts == f]
        rows[codes[f]] = {
            "windows": int(mine.numel()),
            "mean_loss": float(mine.mean()),
            "es10_contribution": float(mine.sum() / k),
        }
    return dict(sorted(rows.items(), key=lambda item: -item[1]["es10_contribution"]))
