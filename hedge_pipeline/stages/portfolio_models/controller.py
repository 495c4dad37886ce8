"""The meta-controller: one underlying position for the whole portfolio, from the specialists'.

Every specialist proposes the hedge of its own book, as it would hold it alone (its own
position feeds back into its next proposal). The portfolio holds one position H_t in the
underlying they all share, so their trades net before costs:

    target_t = Σ_c m_c · s_c,t · (w_c,t · h_c,t + (1 − w_c,t) · δ_c,t)
    H_t      = target_t + clamp(H_{t−1} − target_t, −b_t, b_t)   (a portfolio no-trade band)
    H_t      = clamp(H_t, −L, L)                 (maximum position)

with m the mask of codes present in the window, s the controller's scale per specialist, w its
weight on the specialist against the Black–Scholes delta δ_c of the same book (the analytic
expert: where a specialist is unreliable the controller can lean on the textbook hedge). The
controller starts with every scale 1, a specialist weight of ``initial_weight`` and a band of
``initial_band`` per option held.

Its inputs, per code (shared weights, so any number of codes fits, in any order): the book's
log-moneyness, time to expiry, BS delta and scaled gamma (per option of the book), and the
specialist's proposal (per option); per portfolio: its previous position, the sum of the
proposals and of the BS deltas (per option held), and the books' context columns (the
CNN-LSTM's forecast and uncertainty, turbulence, the coming interval), averaged over the codes
present.

P&L of a window: Σ_c m_c (premium_c − terminal_c) + Σ_t H_t ΔS_t − Σ_t cost(ΔH_t, S_t).

**With hedge options** (delta-gamma specialists: every code's specialist also trades one
option of its code, its *hedge option*), each code keeps its specialist's option position
g_c,t: options of different codes are different instruments and cannot net. The controller
then works on what is left for the underlying: the Black–Scholes delta and scaled gamma it
reads and mixes with are the book's net of the option position (δ_c − g_c·δ^opt_c, the
delta-gamma expert's underlying leg when g_c is its option leg), and the P&L adds each option's
gains Σ_t g_c,t ΔP_c,t less its quoted half-spread per unit traded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from hedge_pipeline.hedging.deep_hedging import MLP, InputScale
from hedge_pipeline.hedging.simulator import (
    DELTA,
    N_MARKET,
    OPTION_DELTA,
    OPTION_SCALED_GAMMA,
    SCALED_GAMMA,
    HedgingProblem,
    Policy,
    book_greeks,
    market_features,
    rollout,
    trade_costs,
    trades,
)
from hedge_pipeline.stages.portfolio_models.market import PortfolioEpisodes

__all__ = [
    "Hedge",
    "MetaController",
    "PortfolioProblem",
    "PortfolioRollout",
    "book_sizes",
    "code_features",
    "mark_to_market",
    "meta_rollout",
    "net_of_options",
    "portfolio_pnl",
    "proposals",
    "split_proposals",
]

N_CODE_INPUTS = N_MARKET + 1  # market columns and the proposal
N_PORTFOLIO_INPUTS = 3  # previous position, sum of proposals, sum of deltas (+ context)


@dataclass(frozen=True)
class PortfolioProblem:
    """The codes' hedging problems (their books and observations) and the portfolio's costs.

    ``problems`` are the specialists' own, in ``PortfolioMarket.codes`` order; the portfolio
    trades at ``cost``/``slippage``/``fixed_fee``, and every comparison (specialists alone
    included) is scored at those costs. ``max_position``: the largest |H| allowed, in units of
    the underlying (None: twice the options held, more than any hedge of them needs).
    ``mv_delta``: Hull and White's (a, b, c), fitted on the training windows
    (:func:`.evaluation.fit_portfolio_mv`), that make the minimum-variance delta a baseline;
    None leaves it out. ``spread_scale``: the hedge options' quoted half-spreads are paid times
    this (1: as quoted; the joint model's curriculum scales them with the other costs).
    """

    codes: tuple[str, ...]
    problems: tuple[HedgingProblem, ...]
    cost: float = 0.0
    slippage: float = 0.0
    fixed_fee: float = 0.0
    max_position: float | None = None
    mv_delta: tuple[float, float, float] | None = None
    spread_scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.codes) != len(self.problems) or not self.codes:
            raise ValueError("a portfolio needs one hedging problem per code, at least one")
        pairs = zip(self.codes, self.problems, strict=True)
        with_option = sorted(c for c, p in pairs if p.instrument is not None)
        if with_option and len(with_option) != len(self.codes):
            raise ValueError(
                "either every code's specialist trades a hedge option or none does; with: "
                f"{', '.join(with_option)}; retrain the others with the same hedge_option"
            )
        if len({p.n_steps for p in self.problems}) != 1:
            raise ValueError("every code's episodes need the same number of decisions")
        if self.max_position is not None and not self.max_position > 0:
            raise ValueError(f"max_position must be > 0, got {self.max_position}")
        if min(self.cost, self.slippage, self.fixed_fee, self.spread_scale) < 0:
            raise ValueError("costs (and spread_scale) must be non-negative")

    @property
    def n_steps(self) -> int:
        return self.problems[0].n_steps

    @property
    def with_options(self) -> bool:
        """Whether every code also trades its hedge option (module docstring)."""
        return self.problems[0].instrument is not None

    @property
    def trading(self) -> HedgingProblem:
        """The costs of the portfolio's trades, as a problem :func:`trade_costs` reads."""
        return HedgingProblem(cost=self.cost, slippage=self.slippage, fixed_fee=self.fixed_fee)

    def at_portfolio_costs(self, c: int) -> HedgingProblem:
        """Code ``c``'s problem trading at the portfolio's costs (a specialist alone)."""
        return replace(
            self.problems[c], cost=self.cost, slippage=self.slippage, fixed_fee=self.fixed_fee
        )


class Hedge(NamedTuple):
    """A portfolio hedger's positions: in the underlying, (n, T) netted or (n, T, C) each code
    trading for itself; and each code's hedge option (n, T, C), None without hedge options."""

    underlying: Tensor
    options: Tensor | None = None


def book_sizes(pp: PortfolioProblem, ep: PortfolioEpisodes) -> Tensor:
    """Options held per code, Σ|w|, 0 where absent. Shape: → (n_paths, n_codes)."""
    size = torch.tensor(
        [sum(abs(w) for w in p.book.weights) for p in pp.problems], dtype=ep.spot.dtype
    )
    return ep.present * size


def code_features(pp: PortfolioProblem, ep: PortfolioEpisodes) -> tuple[Tensor, Tensor]:
    """Each code's market columns (then its hedge option's delta and scaled gamma, with hedge
    options) and the present codes' mean context at every decision.

    Shape: → (n_paths, n_steps, n_codes, 4 or 6), (n_paths, n_steps, n_context)
    """
    columns = [market_features(p, book) for p, book in zip(pp.problems, ep.books, strict=True)]
    stacked = torch.stack(columns, dim=2)  # (n, T, C, 4 [+ 2] + n_context)
    market = N_MARKET + (2 if pp.with_options else 0)
    weights = ep.present / ep.present.sum(dim=1, keepdim=True).clamp(min=1.0)
    context = (stacked[..., market:] * weights[:, None, :, None]).sum(dim=2)
    return stacked[..., :market], context


def net_of_options(feats: Tensor, options: Tensor | None) -> Tensor:
    """The books' market columns with delta and scaled gamma net of the codes' option
    positions (what is left for the underlying, module docstring); unchanged without options.

    Shape: feats (..., C, 6), options (..., C) → (..., C, 6)
    """
    if options is None:
        return feats
    net = feats.clone()
    net[..., DELTA] = feats[..., DELTA] - options * feats[..., OPTION_DELTA]
    net[..., SCALED_GAMMA] = feats[..., SCALED_GAMMA] - options * feats[..., OPTION_SCALED_GAMMA]
    return net


def split_proposals(prop: Tensor) -> Hedge:
    """:func:`proposals` as each code's (underlying, option) positions."""
    return Hedge(prop[..., 0], prop[..., 1]) if prop.ndim == 4 else Hedge(prop)


def proposals(pp: PortfolioProblem, ep: PortfolioEpisodes, specialists: Sequence[Policy]) -> Tensor:
    """Each specialist's hedge of its own book, as it would hold it alone; 0 where absent.

    Shape: → (n_paths, n_steps, n_codes), or (n_paths, n_steps, n_codes, 2) (underlying,
    option) with hedge options
    """
    hedges = [
        rollout(p, book, policy)[1]
        for p, book, policy in zip(pp.problems, ep.books, specialists, strict=True)
    ]
    stacked = torch.stack(hedges, dim=2)
    mask = ep.present.unsqueeze(1)
    return stacked * (mask.unsqueeze(-1) if stacked.ndim == 4 else mask)


def _gains_and_costs(
    pp: PortfolioProblem, ep: PortfolioEpisodes, hedge: Hedge | Tensor
) -> tuple[Tensor, Tensor]:
    """Hedge gains and transaction costs at every step. The underlying (n, T) is one netted
    position; (n, T, C) are the codes' own, each trading (and paying) for itself. Each code's
    option (n, T, C) gains its price change and pays its quoted half-spread (times
    ``pp.spread_scale``) per unit traded. Shape: → (n_paths, n_steps) each."""
    positions, options = hedge if isinstance(hedge, Hedge) else Hedge(hedge)
    spot = ep.spot[:, :-1]
    if positions.ndim == 3:
        costs = trade_costs(pp.trading, trades(positions), spot.unsqueeze(-1)).sum(dim=-1)
        positions = positions.sum(dim=-1)
    else:
        costs = trade_costs(pp.trading, trades(positions), spot)
    gains = positions * ep.spot.diff(dim=1)
    if options is not None:
        options = options * ep.present.unsqueeze(1)
        price = torch.stack([b.instrument_price for b in ep.books], dim=-1)  # (n, T + 1, C)
        spread = torch.stack([b.instrument_cost[:, :-1] for b in ep.books], dim=-1)
        spread = spread * pp.spread_scale
        gains = gains + (options * price.diff(dim=1)).sum(dim=-1)
        costs = costs + (spread * trades(options).abs()).sum(dim=-1)
    return gains, costs


def portfolio_pnl(
    pp: PortfolioProblem, ep: PortfolioEpisodes, positions: Hedge | Tensor
) -> tuple[Tensor, Tensor]:
    """P&L and transaction costs of each window hedged with ``positions`` (module doc): a
    :class:`Hedge`, or its underlying alone. Shape: → (n_paths,), (n_paths,)"""
    books = torch.stack([b.premium - b.terminal_value for b in ep.books], dim=1)
    gains, costs = _gains_and_costs(pp, ep, positions)
    return (books * ep.present).sum(dim=1) + gains.sum(dim=1) - costs.sum(dim=1), costs.sum(dim=1)


def mark_to_market(
    pp: PortfolioProblem, ep: PortfolioEpisodes, positions: Hedge | Tensor
) -> Tensor:
    """The hedged portfolio's P&L path: books at their marks (premium at the start, terminal
    mark at the end, Black–Scholes at their implied vols between), hedge gains and costs to
    date. Its last column is :func:`portfolio_pnl`. Shape: → (n_paths, n_steps + 1)."""
    values = []
    for p, book in zip(pp.problems, ep.books, strict=True):
        marks = book_greeks(p, book.spot, book.tau, book.vol)["price"]
        marks = torch.cat(
            [book.premium[:, None], marks[:, 1:-1], book.terminal_value[:, None]], dim=1
        )
        values.append(book.premium[:, None] - marks)
    books = (torch.stack(values, dim=2) * ep.present[:, None, :]).sum(dim=2)
    gains, costs = _gains_and_costs(pp, ep, positions)
    zero = torch.zeros_like(books[:, :1])
    return books + torch.cat([zero, (gains - costs).cumsum(dim=1)], dim=1)


class PortfolioRollout(NamedTuple):
    """One pass of the controller over a batch. Shape: pnl, costs (n,); positions (n, T);
    scales (n, T, n_codes); bands (n, T); options (n, T, n_codes) or None."""

    pnl: Tensor
    costs: Tensor
    positions: Tensor
    scales: Tensor
    bands: Tensor
    options: Tensor | None = None

    @property
    def hedge(self) -> Hedge:
        return Hedge(self.positions, self.options)


# The band's log half-width per option held is capped at log 10: 10 units of the underlying per
# option is wider than any option's delta moves, so the band already never binds there, and
# the cap keeps exp() finite: past ~88 a float32 band was inf and its gradient (0, the band not
# binding, times inf) NaN, which a joint-model run met (TrainingDiverged).
MAX_LOG_BAND = math.log(10.0)


class MetaController(nn.Module):
    """Per-specialist scales and a portfolio band (module docstring).

    Args:
        n_context: context columns of the codes' observations.
        initial_band: the band's half-width at the start, per option held.
        initial_weight: the weight on each specialist against BS delta at the start.
        max_scale_change: scales lie in 1 ± this.
    """

    def __init__(
        self,
        n_context: int,
        width: int = 32,
        n_layers: int = 2,
        initial_band: float = 1e-3,
        initial_weight: float = 0.9,
        max_scale_change: float = 1.0,
    ) -> None:
        super().__init__()
        if not initial_band > 0 or not max_scale_change > 0 or not 0 < initial_weight < 1:
            raise ValueError(
                "need initial_band > 0, max_scale_change > 0 and 0 < initial_weight < 1"
            )
        n_portfolio = N_PORTFOLIO_INPUTS + n_context
        self.config = {
            "n_context": n_context,
            "width": width,
            "n_layers": n_layers,
            "initial_band": initial_band,
            "initial_weight": initial_weight,
            "max_scale_change": max_scale_change,
        }
        self.code_inputs = InputScale(N_CODE_INPUTS)
        self.portfolio_inputs = InputScale(n_portfolio)
        inputs = N_CODE_INPUTS + n_portfolio
        self.scale_head = MLP(inputs, 2, width, n_layers, zero_output=True)
        self.weight_logit = nn.Parameter(
            torch.tensor(math.log(initial_weight / (1 - initial_weight)))
        )
        self.band_head = MLP(inputs, 1, width, n_layers, zero_output=True)
        self.log_band = nn.Parameter(torch.tensor(math.log(initial_band)))
        self.max_scale_change = max_scale_change

    def forward(
        self,
        code_x: Tensor,
        portfolio_x: Tensor,
        mask: Tensor,
        proposal: Tensor,
        delta: Tensor,
        prev: Tensor,
        size: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(position, scales, band) at one decision.

        Shape:
            code_x (n, C, 5), portfolio_x (n, P), mask (n, C), proposal and delta (n, C),
            prev (n,), size (n,) options held → (n,), (n, C), (n,)
        """
        port = self.portfolio_inputs(portfolio_x)
        codes = self.code_inputs(code_x)
        joined = torch.cat([codes, port.unsqueeze(1).expand(-1, codes.shape[1], -1)], dim=-1)
        heads = self.scale_head(joined)
        scales = 1.0 + self.max_scale_change * torch.tanh(heads[..., 0])
        weight = torch.sigmoid(self.weight_logit + heads[..., 1])
        weights = mask / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        pooled = torch.cat([(codes * weights.unsqueeze(-1)).sum(dim=1), port], dim=-1)
        log_band = (self.log_band + self.band_head(pooled).squeeze(-1)).clamp(max=MAX_LOG_BAND)
        band = torch.exp(log_band) * size
        mixed = weight * proposal + (1.0 - weight) * delta
        target = (mask * scales * mixed).sum(dim=1)
        position = target + torch.maximum(torch.minimum(prev - target, band), -band)
        return position, scales, band


def _inputs(
    feats: Tensor, context: Tensor, sizes: Tensor, prop: Tensor, prev: Tensor
) -> tuple[Tensor, Tensor]:
    """The controller's code and portfolio inputs (module docstring), for any leading dims.

    Shape: feats (..., C, 4), context (..., K), sizes (..., C), prop (..., C), prev (...)
        → (..., C, 5), (..., 3 + K)
    """
    per_option = sizes.clamp(min=1e-12)
    total = sizes.sum(dim=-1).clamp(min=1e-12)
    code_x = torch.cat(
        [
            feats[..., :DELTA],
            (feats[..., DELTA] / per_option).unsqueeze(-1),
            (feats[..., SCALED_GAMMA] / per_option).unsqueeze(-1),
            (prop / per_option).unsqueeze(-1),
        ],
        dim=-1,
    )
    present = (sizes > 0).to(feats.dtype)
    portfolio_x = torch.cat(
        [
            torch.stack(
                [
                    prev / total,
                    prop.sum(dim=-1) / total,
                    (feats[..., DELTA] * present).sum(dim=-1) / total,
                ],
                dim=-1,
            ),
            context,
        ],
        dim=-1,
    )
    return code_x, portfolio_x


def fit_inputs(
    meta: MetaController, pp: PortfolioProblem, ep: PortfolioEpisodes, prop: Tensor
) -> None:
    """Set the controller's input scales from a sample, holding the netted proposals (the
    identity controller's positions, without band)."""
    prop, options = split_proposals(prop)
    feats, context = code_features(pp, ep)
    feats = net_of_options(feats, options)
    sizes = book_sizes(pp, ep).unsqueeze(1).expand(-1, pp.n_steps, -1)
    target = prop.sum(dim=-1)
    prev = torch.cat([torch.zeros_like(target[:, :1]), target[:, :-1]], dim=1)
    code_x, portfolio_x = _inputs(feats, context, sizes, prop, prev)
    present = sizes.reshape(-1, sizes.shape[-1]) > 0
    meta.code_inputs.fit(code_x.reshape(-1, code_x.shape[-2], code_x.shape[-1])[present])
    meta.portfolio_inputs.fit(portfolio_x.reshape(-1, portfolio_x.shape[-1]))


def meta_rollout(
    pp: PortfolioProblem, ep: PortfolioEpisodes, prop: Tensor, meta: MetaController
) -> PortfolioRollout:
    """Drive ``meta`` over every window at once, from the specialists' proposals ``prop``
    (:func:`proposals`); the position is the only state carried through time. With hedge
    options each code holds its specialist's option (module docstring)."""
    prop, options = split_proposals(prop)
    feats, context = code_features(pp, ep)
    feats = net_of_options(feats, options)
    sizes = book_sizes(pp, ep)
    size = sizes.sum(dim=1)
    limit = size * 2.0 if pp.max_position is None else torch.full_like(size, pp.max_position)
    prev = torch.zeros_like(size)
    positions, scales, bands = [], [], []
    for t in range(pp.n_steps):
        code_x, portfolio_x = _inputs(feats[:, t], context[:, t], sizes, prop[:, t], prev)
        delta = feats[:, t, :, DELTA] * ep.present
        held, scale, band = meta(code_x, portfolio_x, ep.present, prop[:, t], delta, prev, size)
        prev = torch.maximum(torch.minimum(held, limit), -limit)
        positions.append(prev)
        scales.append(scale)
        bands.append(band)
    stacked = torch.stack(positions, dim=1)
    pnl, costs = portfolio_pnl(pp, ep, Hedge(stacked, options))
    return PortfolioRollout(
        pnl, costs, stacked, torch.stack(scales, dim=1), torch.stack(bands, dim=1), options
    )
