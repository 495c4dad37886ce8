"""One batched, differentiable hedging simulator: paths, observations, P&L and rollouts.

A book is short European options of one maturity on one underlying; the hedger holds δ_t
units of the underlying over each step [t, t+1], decided at t from what it can observe then.
Everything works on whole batches of paths as tensors ``(n_paths, n_steps + 1)``, with a
Python loop over the (~30) decision times only, so one rollout of 10,000 paths costs a few
milliseconds and gradients flow from the P&L back to the policy's parameters.

The P&L convention is that of the reference experiment E1 (docs/notes.md, E1),
exactly, so pfhedge's published prices compare one to one::

    PL = −payoff(S_N) + Σ_{t=1..N} δ_{t−1}(S_t − S_{t−1}) − Σ_{t=0..N−1} cost(δ_t − δ_{t−1}, S_t)

with δ_{−1} = 0 (the first trade pays costs) and no liquidation at maturity. ``cost`` is
c·|Δδ|·S (proportional: half-spread and commission), plus ``slippage``·Δδ²·S (market impact,
linear in the size per unit) plus ``fixed_fee`` per non-zero trade (not differentiable: a
constant almost everywhere). Rates are zero: the underlying is a futures price (margined, no
carry) and cash earns nothing over a few weeks, as in E1.

Paths come from :func:`simulate_paths` (GBM, or Heston by full-truncation Euler) or from
anywhere else. Every other function takes either a plain price tensor (the E1 setting: the book
is sold at t = 0 with ``maturity`` to run, priced at the model vol ``sigma``) or an
:class:`Episodes` batch, which says per path and per time what a tensor of prices cannot: the
time to the book's expiry, the implied vol of each book option (for the Greeks and the marks),
what the book was sold for and is worth at the end, and extra observation columns (context).
A window of a weekly code's history (replay) or a path simulated from a calibrated market
(``hedge_pipeline.hedging.code_market``) is an ``Episodes``; with premium and terminal value
the P&L becomes ``premium − terminal_value + gains − costs``, which for a tensor of paths
(premium 0, terminal value the payoff) is exactly the E1 formula above.

>>> import torch
>>> problem = HedgingProblem(cost=1e-3)
>>> paths = simulate_paths(problem, 4, torch.Generator().manual_seed(0))
>>> paths.shape, observations(problem, paths, 0, torch.zeros(4)).shape
(torch.Size([4, 31]), torch.Size([4, 5]))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor

from hedge_pipeline.quant.market_sim import HestonParams
from hedge_pipeline.quant.torch_pricing import bs_greeks

__all__ = [
    "OBSERVATIONS",
    "VOLATILITY",
    "Book",
    "Episodes",
    "HedgingProblem",
    "Instrument",
    "Policy",
    "as_episodes",
    "book_greeks",
    "book_price",
    "episode_costs",
    "market_features",
    "observations",
    "option_price",
    "payoff",
    "pnl",
    "rollout",
    "simulate_episodes",
    "simulate_paths",
    "trade_costs",
    "trades",
]

# Columns of an observation without context: four market features, then the position. A
# problem with ``context`` columns puts them between the two (``HedgingProblem.observations``);
# the position is always the last column.
OBSERVATIONS = ("log_moneyness", "time_to_expiry", "delta", "scaled_gamma", "prev_hedge")
LOG_MONEYNESS, TIME_TO_EXPIRY, DELTA, SCALED_GAMMA, PREV_HEDGE = range(len(OBSERVATIONS))
N_MARKET = PREV_HEDGE  # market-feature columns before any context
# With a hedge option (delta-gamma), its delta and scaled gamma follow the market columns and
# the previous option position follows the previous hedge.
OPTION_COLUMNS = ("option_delta", "option_scaled_gamma")
OPTION_DELTA, OPTION_SCALED_GAMMA = N_MARKET, N_MARKET + 1

# The context column of a simulated market's current vol (:func:`simulate_episodes`), and the
# floor of the vol the Greeks are taken at (Euler's variance can touch 0, where they are not
# defined).
VOLATILITY = "volatility"
MIN_SIMULATED_VOL = 1e-3

Policy = Callable[[Tensor, Tensor], Tensor]
"""policy(obs_t (n_paths, n_obs), prev_hedge (n_paths,)) → hedge held over [t, t+1] (n_paths,)."""


@dataclass(frozen=True)
class Book:
    """The short position: ``weights[i]`` units of European option i, all of one maturity.

    The reference strike (the weight-averaged strike) anchors the log-moneyness feature.
    """

    strikes: tuple[float, ...] = (1.0,)
    is_call: tuple[bool, ...] = (True,)
    weights: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not len(self.strikes) == len(self.is_call) == len(self.weights) >= 1:
            raise ValueError(f"strikes, is_call and weights need one equal length >= 1: {self}")
        if min(self.strikes) <= 0.0:
            raise ValueError(f"strikes must be positive: {self.strikes}")

    @property
    def reference_strike(self) -> float:
        total = sum(abs(w) for w in self.weights) or 1.0
        return sum(abs(w) * k for w, k in zip(self.weights, self.strikes, strict=True)) / total


@dataclass(frozen=True)
class Instrument:
    """A European option of the book's expiry the hedger may trade (delta-gamma hedging)."""

    strike: float
    is_call: bool = True


@dataclass(frozen=True)
class HedgingProblem:
    """Market, book, costs and decision grid; the defaults are the reference experiment E1.

    ``sigma`` is the GBM vol and the model vol of the Black–Scholes features and baselines;
    with ``heston`` set the market is Heston and ``sigma`` stays the hedger's (misspecified)
    model vol — a natural choice is √θ — unless ``context`` holds :data:`VOLATILITY`: then
    the hedger observes the current vol √v_t and its Greeks are taken at it
    (:func:`simulate_episodes`). ``drift`` is the real-world drift of the underlying.
    With ``instrument`` the hedger also holds that option: positions are then (underlying,
    option) pairs and the option's trades pay the episodes' ``instrument_cost`` per unit.
    """

    book: Book = field(default_factory=Book)
    s0: float = 1.0
    sigma: float = 0.2
    drift: float = 0.0
    heston: HestonParams | None = None
    maturity: float = 30 / 250
    n_steps: int = 30
    cost: float = 0.0
    slippage: float = 0.0
    fixed_fee: float = 0.0
    context: tuple[str, ...] = ()
    instrument: Instrument | None = None

    def __post_init__(self) -> None:
        if self.n_steps < 1 or self.maturity <= 0.0 or self.s0 <= 0.0 or self.sigma <= 0.0:
            raise ValueError(f"need n_steps >= 1 and positive maturity, s0, sigma: {self}")
        if min(self.cost, self.slippage, self.fixed_fee) < 0.0:
            raise ValueError(
                f"costs must be non-negative, got cost={self.cost}, slippage={self.slippage}, "
                f"fixed_fee={self.fixed_fee}"
            )

    @property
    def n_instruments(self) -> int:
        """1 (the underlying) or 2 (and the hedge option)."""
        return 1 if self.instrument is None else 2

    @property
    def observations(self) -> tuple[str, ...]:
        """Observation columns: market features (and the option's), context, positions."""
        option = OPTION_COLUMNS if self.instrument else ()
        positions = ("prev_hedge", "prev_option")[: self.n_instruments]
        return (*OBSERVATIONS[:N_MARKET], *option, *self.context, *positions)

    @property
    def n_features(self) -> int:
        """Columns a policy's network reads besides the positions."""
        return len(self.observations) - self.n_instruments

    @property
    def dt(self) -> float:
        """Length of one hedging step in years."""
        return self.maturity / self.n_steps

    @property
    def market(self) -> str:
        return "gbm" if self.heston is None else "heston"


class Episodes(NamedTuple):
    """A batch of hedging episodes: everything the P&L and the observations need, per path.

    A NamedTuple of tensors so that the training loop (``harness.trainer``) can treat it as a
    batch; ``vol`` may be any shape broadcastable to (n_paths, n_steps + 1, n_options) (a
    scalar model vol in E1).

    Shape:
        spot, tau: (n_paths, n_steps + 1), years to the book's expiry in ``tau``;
        vol: implied vol of each book option, (n_paths, n_steps + 1, n_options) or broadcastable;
        premium, terminal_value: (n_paths,), the book's price at t = 0 and mark at t = N
        (its payoff when it expires then); context: (n_paths, n_steps, n_context);
        instrument_price, instrument_vol, instrument_cost: (n_paths, n_steps + 1), the hedge
        option's mark, implied vol and cost per unit traded (half-spread), None without one.
    """

    spot: Tensor
    tau: Tensor
    vol: Tensor
    premium: Tensor
    terminal_value: Tensor
    context: Tensor
    instrument_price: Tensor | None = None
    instrument_vol: Tensor | None = None
    instrument_cost: Tensor | None = None

    @property
    def n_paths(self) -> int:
        return self.spot.shape[0]


def as_episodes(problem: HedgingProblem, paths: Tensor | Episodes) -> Episodes:
    """``paths`` itself, or the E1 episodes of a price tensor.

    E1: the book is sold at t = 0 for nothing (the risk measure's value is then the price),
    runs ``maturity`` to expiry on a uniform grid and is priced at the model vol ``sigma``.
    """
    if isinstance(paths, Episodes):
        if paths.spot.ndim != 2 or paths.spot.shape[1] != problem.n_steps + 1:
            expected = f"(n_paths, {problem.n_steps + 1})"
            raise ValueError(f"episodes must be {expected}, got {tuple(paths.spot.shape)}")
        if paths.context.shape[-1] != len(problem.context):
            raise ValueError(
                f"episodes carry {paths.context.shape[-1]} context columns, the problem "
                f"expects {len(problem.context)} ({', '.join(problem.context) or 'none'})"
            )
        if (problem.instrument is None) != (paths.instrument_price is None):
            raise ValueError("episodes carry a hedge option exactly when the problem has one")
        return paths
    _check_paths(problem, paths)
    if problem.heston is not None and VOLATILITY in problem.context:
        raise ValueError(
            "a Heston price tensor carries no variance, and this problem observes the "
            f"{VOLATILITY!r}: pass simulate_episodes' episodes instead"
        )
    n, dtype = paths.shape[0], paths.dtype
    steps = torch.arange(problem.n_steps + 1, dtype=dtype)
    tau = (problem.maturity - steps * problem.dt).clamp(min=0.0).expand(n, -1)
    vol = torch.tensor(problem.sigma, dtype=dtype)
    option: dict[str, Tensor] = {}
    if problem.instrument is not None:
        # Priced at the model vol, traded at the underlying's proportional cost of its price.
        price = option_price(problem, paths, tau, vol)
        option = {
            "instrument_price": price,
            "instrument_vol": vol.expand_as(paths),
            "instrument_cost": problem.cost * price,
        }
    return Episodes(
        spot=paths,
        tau=tau,
        vol=vol,
        premium=torch.zeros(n, dtype=dtype),
        terminal_value=payoff(problem, paths[:, -1]),
        context=torch.zeros((n, problem.n_steps, len(problem.context)), dtype=dtype),
        **option,
    )


def option_price(problem: HedgingProblem, spot: Tensor, tau: Tensor, vol: Tensor) -> Tensor:
    """Black–Scholes value of the hedge option (its payoff at tau 0).

    Shape:
        spot, tau, vol: broadcastable (...) → (...)
    """
    option = problem.instrument
    assert option is not None
    return bs_greeks(spot, option.strike, tau, vol, is_call=option.is_call)["price"]


def simulate_paths(
    problem: HedgingProblem,
    n_paths: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Underlying prices on the decision grid, S_0 = ``problem.s0``.

    GBM is sampled exactly; Heston by full-truncation Euler on the decision grid (daily
    steps in E1, where the scheme's bias is far below the Monte Carlo error). Every normal
    draw comes from ``generator``, so a seed fixes the paths.

    Shape:
        → (n_paths, n_steps + 1)
    """
    return _simulate(problem, n_paths, generator, dtype)[0]


def simulate_episodes(
    problem: HedgingProblem,
    n_paths: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Episodes:
    """The episodes of :func:`simulate_paths`'s prices (the same draws, so the same paths),
    with what a price tensor cannot carry: the market's current volatility.

    When ``problem.context`` holds :data:`VOLATILITY`, the hedger observes the current vol
    (√v_t in Heston, σ in GBM) as that column, and the Greeks, hence the delta the
    baselines and the no-transaction band read, are taken at it: the delta at today's vol,
    as a desk computes it, not at a constant reference vol the market has left. Without it
    the episodes are exactly :func:`as_episodes` of the prices (E1: Greeks at ``sigma``).
    Any other context column needs a market that supplies it (e.g. a code market) and is
    refused here.

    >>> from hedge_pipeline.quant.market_sim import HestonParams
    >>> problem = HedgingProblem(heston=HestonParams(), context=(VOLATILITY,))
    >>> ep = simulate_episodes(problem, 3, torch.Generator().manual_seed(0))
    >>> ep.vol.shape, ep.context.shape
    (torch.Size([3, 31, 1]), torch.Size([3, 30, 1]))
    >>> torch.allclose(ep.context[:, 0, 0], torch.tensor(HestonParams().v0 ** 0.5))
    True

    Shape:
        → Episodes with spot (n_paths, n_steps + 1); with the vol observed, vol
        (n_paths, n_steps + 1, 1) and context (n_paths, n_steps, 1)
    """
    unknown = [name for name in problem.context if name != VOLATILITY]
    if unknown:
        raise ValueError(
            f"a simulated {problem.market} market supplies only the {VOLATILITY!r} context "
            f"column, not {', '.join(map(repr, unknown))}"
        )
    if problem.context and problem.instrument is not None:
        raise ValueError("a hedge option is priced at the reference vol: observe no vol with one")
    spot, vol = _simulate(problem, n_paths, generator, dtype)
    episodes = as_episodes(replace(problem, context=()), spot)
    if not problem.context:
        return episodes
    vol = vol.clamp(min=MIN_SIMULATED_VOL)
    return episodes._replace(vol=vol.unsqueeze(-1), context=vol[:, :-1].unsqueeze(-1))


def _simulate(
    problem: HedgingProblem, n_paths: int, generator: torch.Generator | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Prices and the current vol (σ in GBM, √v_t in Heston) on the decision grid.

    Shape:
        → (n_paths, n_steps + 1) each
    """
    n, dt = problem.n_steps, problem.dt
    z = torch.randn((n_paths, n), generator=generator, dtype=dtype)
    if problem.heston is None:
        vol = problem.sigma
        steps = (problem.drift - 0.5 * vol * vol) * dt + vol * dt**0.5 * z
        current_vol = torch.full((n_paths, n + 1), vol, dtype=dtype)
    else:
        steps, variance = _heston_log_steps(problem, z, generator)
        current_vol = variance.clamp(min=0.0).sqrt()
    log_s = torch.cat([torch.zeros((n_paths, 1), dtype=dtype), steps.cumsum(dim=1)], dim=1)
    return problem.s0 * torch.exp(log_s), current_vol


def _heston_log_steps(
    problem: HedgingProblem, z: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Log-price increments of Heston (full truncation, Lord et al. 2010) and the variance
    at every decision time (before truncation: it may dip below 0 between two steps).

    Shape:
        z: (n_paths, n_steps) price shocks → (n_paths, n_steps), (n_paths, n_steps + 1)
    """
    p, dt = problem.heston, problem.dt
    assert p is not None
    z_var = torch.randn(z.shape, generator=generator, dtype=z.dtype)
    shock = p.rho * z_var + (1.0 - p.rho**2) ** 0.5 * z
    v = torch.full(z.shape[:1], p.v0, dtype=z.dtype)
    steps, variance = [], [v]
    for i in range(z.shape[1]):
        vp = v.clamp(min=0.0)
        sd = (vp * dt).sqrt()
        steps.append((problem.drift - 0.5 * vp) * dt + sd * shock[:, i])
        v = v + p.kappa * (p.theta - vp) * dt + p.xi * sd * z_var[:, i]
        variance.append(v)
    return torch.stack(steps, dim=1), torch.stack(variance, dim=1)


def _check_paths(problem: HedgingProblem, paths: Tensor) -> None:
    if paths.ndim != 2 or paths.shape[1] != problem.n_steps + 1:
        expected = f"(n_paths, {problem.n_steps + 1})"
        raise ValueError(f"paths must be {expected}, got {tuple(paths.shape)}")


def book_greeks(
    problem: HedgingProblem, spot: Tensor, tau: Tensor | float, vol: Tensor | float | None = None
) -> dict[str, Tensor]:
    """Black–Scholes value, delta and gamma of the (long) book (keys ``price, delta, gamma``).

    ``vol`` is each option's implied vol (default: the model vol ``sigma`` for all).

    Shape:
        spot, tau: broadcastable (...); vol: (..., n_options) or broadcastable → each (...)
    """
    book = problem.book
    tau = torch.as_tensor(tau, dtype=spot.dtype)
    vol = torch.as_tensor(problem.sigma if vol is None else vol, dtype=spot.dtype)
    strikes = torch.tensor(book.strikes, dtype=spot.dtype)
    calls = torch.tensor(book.is_call)
    weights = torch.tensor(book.weights, dtype=spot.dtype)
    g = bs_greeks(spot.unsqueeze(-1), strikes, tau.unsqueeze(-1), vol, is_call=calls)
    return {k: (g[k] * weights).sum(-1) for k in ("price", "delta", "gamma")}


def book_price(problem: HedgingProblem, dtype: torch.dtype = torch.float64) -> float:
    """Black–Scholes value of the book at t = 0: the zero-cost, continuous-hedging price."""
    book = problem.book
    g = bs_greeks(
        torch.tensor(problem.s0, dtype=dtype),
        torch.tensor(book.strikes, dtype=dtype),
        problem.maturity,
        problem.sigma,
        is_call=torch.tensor(book.is_call),
    )
    return float((g["price"] * torch.tensor(book.weights, dtype=dtype)).sum())


def payoff(problem: HedgingProblem, terminal: Tensor) -> Tensor:
    """What the book pays at maturity, Σ w_i·max(±(S_N − K_i), 0).

    Shape:
        terminal: (n_paths,) → (n_paths,)
    """
    book = problem.book
    strikes = torch.tensor(book.strikes, dtype=terminal.dtype)
    sign = torch.where(torch.tensor(book.is_call), 1.0, -1.0).to(terminal.dtype)
    weights = torch.tensor(book.weights, dtype=terminal.dtype)
    intrinsic = (sign * (terminal.unsqueeze(-1) - strikes)).clamp(min=0.0)
    return (intrinsic * weights).sum(-1)


def market_features(problem: HedgingProblem, paths: Tensor | Episodes) -> Tensor:
    """The observation columns before the position at every decision time t = 0..N−1.

    log(S_t/K_ref), time to expiry, book delta, S·Γ·σ·√τ (gamma made scale free and bounded,
    φ(d1) for one option, so that a network needs no input normalization while the raw gamma
    grows like 1/√τ at the money; σ is the problem's reference vol ``sigma``, so a Whalley–
    Wilmott band can read S·Γ back), then the episodes' context columns.

    Shape:
        paths: (n_paths, n_steps + 1) or Episodes → (n_paths, n_steps, problem.n_features)
    """
    ep = as_episodes(problem, paths)
    vol = ep.vol if ep.vol.ndim < 2 else ep.vol[:, :-1]
    spot, tau = ep.spot[:, :-1], ep.tau[:, :-1]
    columns = [_features(problem, spot, tau, vol)]
    if problem.instrument is not None:
        option = problem.instrument
        g = bs_greeks(spot, option.strike, tau, ep.instrument_vol[:, :-1], is_call=option.is_call)
        scaled_gamma = g["gamma"] * spot * problem.sigma * tau.sqrt()
        columns.append(torch.stack([g["delta"], scaled_gamma], dim=-1))
    columns.append(ep.context.to(spot.dtype))
    return torch.cat(columns, dim=-1)


def _features(
    problem: HedgingProblem, spot: Tensor, tau: Tensor | float, vol: Tensor | float | None = None
) -> Tensor:
    """The four market columns. Shape: spot (...), tau broadcastable to it → (..., 4)."""
    tau = torch.as_tensor(tau, dtype=spot.dtype).expand_as(spot)
    g = book_greeks(problem, spot, tau, vol)
    scaled_gamma = g["gamma"] * spot * problem.sigma * tau.sqrt()
    log_moneyness = torch.log(spot / problem.book.reference_strike)
    return torch.stack([log_moneyness, tau, g["delta"], scaled_gamma], dim=-1)


def observations(
    problem: HedgingProblem, paths: Tensor | Episodes, t: int, prev_hedge: Tensor
) -> Tensor:
    """What the hedger sees at decision time ``t`` (columns: ``problem.observations``).

    Shape:
        paths: (n_paths, n_steps + 1) or Episodes, prev_hedge: (n_paths,) → (n_paths, n_obs)
    """
    if not 0 <= t < problem.n_steps:
        raise ValueError(f"decision time must lie in [0, {problem.n_steps}), got {t}")
    feats = market_features(problem, paths)[:, t]
    return torch.cat([feats, prev_hedge.reshape(feats.shape[0], -1)], dim=-1)


def trade_costs(problem: HedgingProblem, trades: Tensor, spot: Tensor) -> Tensor:
    """Cost of each trade: c·|Δ|·S + slippage·Δ²·S + fixed fee per non-zero trade.

    Shape:
        trades, spot: (...) → (...)
    """
    costs = (problem.cost * trades.abs() + problem.slippage * trades * trades) * spot
    if problem.fixed_fee:
        costs = costs + problem.fixed_fee * (trades != 0).to(costs.dtype)
    return costs


def _positions(problem: HedgingProblem, ep: Episodes, hedges: Tensor) -> tuple[Tensor, ...]:
    """(underlying, option or None) positions, after checking the shape of ``hedges``."""
    expected = (ep.n_paths, problem.n_steps) + ((2,) if problem.instrument else ())
    if hedges.shape != expected:
        raise ValueError(f"hedges must be {expected}, got {tuple(hedges.shape)}")
    if problem.instrument is None:
        return hedges, None
    return hedges[..., 0], hedges[..., 1]


def trades(positions: Tensor) -> Tensor:
    """Position changes, the first from nothing (δ_{−1} = 0).

    Shape:
        (n_paths, n_steps) or (n_paths, n_steps, 2) → the same
    """
    return torch.diff(positions, dim=1, prepend=torch.zeros_like(positions[:, :1]))


def episode_costs(problem: HedgingProblem, paths: Tensor | Episodes, hedges: Tensor) -> Tensor:
    """Transaction costs of each episode: the underlying's (:func:`trade_costs`) plus the
    option's half-spread per unit traded.

    Shape:
        hedges: (n_paths, n_steps) or (n_paths, n_steps, 2) → (n_paths,)
    """
    ep = as_episodes(problem, paths)
    underlying, option = _positions(problem, ep, hedges)
    costs = trade_costs(problem, trades(underlying), ep.spot[:, :-1]).sum(dim=1)
    if option is not None:
        costs = costs + (ep.instrument_cost[:, :-1] * trades(option).abs()).sum(dim=1)
    return costs


def pnl(problem: HedgingProblem, paths: Tensor | Episodes, hedges: Tensor) -> Tensor:
    """Terminal P&L of the short book hedged with ``hedges`` (module doc); the option, when
    there is one, is marked to its price at the end like the underlying (no liquidation).

    Shape:
        paths: (n_paths, n_steps + 1) or Episodes,
        hedges: (n_paths, n_steps), or (n_paths, n_steps, 2) with a hedge option → (n_paths,)
    """
    ep = as_episodes(problem, paths)
    underlying, option = _positions(problem, ep, hedges)
    gains = (underlying * ep.spot.diff(dim=1)).sum(dim=1)
    if option is not None:
        gains = gains + (option * ep.instrument_price.diff(dim=1)).sum(dim=1)
    return ep.premium - ep.terminal_value + gains - episode_costs(problem, ep, hedges)


def rollout(
    problem: HedgingProblem, paths: Tensor | Episodes, policy: Policy
) -> tuple[Tensor, Tensor]:
    """Run ``policy`` forward in time on every path at once and score the result.

    The market features are computed for all steps in one vectorized pass (they do not
    depend on the hedge); only the position is carried through the loop, so the autograd
    graph links each decision to the ones before it, as the pathwise gradient requires.

    A policy with ``n_instruments = 2`` sets (underlying, option) positions; any other
    policy hedges with the underlying alone.

    Shape:
        paths: (n_paths, n_steps + 1) or Episodes → pnl: (n_paths,),
        hedges: (n_paths, n_steps) or (n_paths, n_steps, 2) with a hedge option
    """
    paths = as_episodes(problem, paths)
    feats = market_features(problem, paths)
    n, n_inst = paths.n_paths, problem.n_instruments
    prev = torch.zeros((n, n_inst) if n_inst > 1 else (n,), dtype=feats.dtype)
    # A hedger of the underlying alone (the baselines) holds no option in a delta-gamma problem.
    underlying_only = n_inst > 1 and getattr(policy, "n_instruments", 1) == 1
    hedges = []
    for t in range(problem.n_steps):
        obs = torch.cat([feats[:, t], prev.reshape(n, -1)], dim=-1)
        if underlying_only:
            held = policy(obs, prev[:, 0])
            prev = torch.stack([held, torch.zeros_like(held)], dim=-1)
        else:
            prev = policy(obs, prev)
        hedges.append(prev)
    stacked = torch.stack(hedges, dim=1)
    return pnl(problem, paths, stacked), stacked
