"""Reference hedgers, reported next to every learned one on the same paths (docs/design.md §7).

Each is a :data:`~hedge_pipeline.hedging.simulator.Policy`: ``policy(obs, prev_hedge)``
returns the position to hold over the next step, so :func:`rollout` drives them exactly like a
network.

* :class:`NoHedge`: hold nothing; the price is the risk of the naked short book.
* :class:`BlackScholesDelta`: the model delta at every step; optimal without costs.
* :class:`BlackScholesDeltaGamma`: with a hedge option, hold Γ_book/Γ_option options and the
  underlying that makes the whole hedge delta-neutral: locally immune to moves of either sign,
  overnight gaps included, at the price of the option's spread.
* :class:`WhalleyWilmott`: trade only when the position leaves a band of half-width
  H = (3·c·S·Γ²·e^{−r(T−t)} / (2·γ))^{1/3} around the delta, and then only to its edge: the
  asymptotically optimal policy for exponential utility with small proportional costs
  (Whalley & Wilmott 1997). γ is the risk aversion; for the entropic measure with parameter a
  use γ = a. Rates are zero in the simulator, so the discount factor is 1.
* :class:`MinimumVarianceDelta`: Hull & White (2017): the BS delta plus the expected effect of
  the spot's move on the implied vol, δ_MV = δ + φ(d1)·(a + b·δ + c·δ²) for a call (φ(d1) is
  vega/(S√τ)), with a, b, c fitted by least squares on observed option price changes
  (:func:`fit_minimum_variance_delta`). Where implied vol falls as the index rises, as on
  real index options, it hedges with less than the BS delta and is the analytic hedge to beat.

>>> import torch
>>> from hedge_pipeline.hedging.simulator import HedgingProblem, rollout, simulate_paths
>>> problem = HedgingProblem(cost=1e-3)
>>> paths = simulate_paths(problem, 1000, torch.Generator().manual_seed(0))
>>> pl, hedges = rollout(problem, paths, WhalleyWilmott(problem, risk_aversion=1.0))
>>> hedges.shape
torch.Size([1000, 30])
"""

from __future__ import annotations

import torch
from torch import Tensor

from hedge_pipeline.hedging.simulator import (
    DELTA,
    LOG_MONEYNESS,
    OPTION_DELTA,
    OPTION_SCALED_GAMMA,
    SCALED_GAMMA,
    TIME_TO_EXPIRY,
    Episodes,
    HedgingProblem,
    market_features,
)

__all__ = [
    "BlackScholesDelta",
    "BlackScholesDeltaGamma",
    "MinimumVarianceDelta",
    "NoHedge",
    "WhalleyWilmott",
    "delta_gamma",
    "fit_minimum_variance",
    "fit_minimum_variance_delta",
    "minimum_variance_correction",
    "option_cap",
    "whalley_wilmott_width",
]

MIN_OPTION_GAMMA = 0.01  # scaled gamma φ(d1) of the hedge option: |d1| < 2.9, still convex


def delta_gamma(obs: Tensor, max_options: float, min_gamma: float = MIN_OPTION_GAMMA) -> Tensor:
    """(underlying, option) positions that zero the hedged book's delta and gamma.

    Both gammas are scaled by the same S·σ·√τ, so their ratio is the ratio of gammas. An option
    with little gamma left (deep in or out of the money near expiry, φ(d1) < 0.01) would need
    many contracts, each paying its spread, to carry the book's gamma: it is not used below
    ``min_gamma``, and the option position is capped at ``max_options`` (a multiple of the
    book's size) always;
    the underlying makes the whole hedge delta-neutral either way.

    Shape:
        obs: (n_paths, n_obs) of a problem with a hedge option → (n_paths, 2)
    """
    book_gamma, option_gamma = obs[:, SCALED_GAMMA], obs[:, OPTION_SCALED_GAMMA]
    usable = option_gamma.abs() >= min_gamma
    safe = torch.where(usable, option_gamma, torch.ones_like(option_gamma))
    options = torch.where(usable, book_gamma / safe, torch.zeros_like(option_gamma))
    options = options.clamp(-max_options, max_options)
    return torch.stack([obs[:, DELTA] - options * obs[:, OPTION_DELTA], options], dim=-1)


def option_cap(problem: HedgingProblem) -> float:
    """The most hedge options a delta-gamma hedger holds: twice the book's options."""
    return 2.0 * sum(abs(w) for w in problem.book.weights)


class NoHedge:
    """Never trade.

    Shape:
        obs: (n_paths, 5), prev_hedge: (n_paths,) → (n_paths,)
    """

    def __call__(self, obs: Tensor, prev_hedge: Tensor) -> Tensor:
        return torch.zeros_like(prev_hedge)


class BlackScholesDelta:
    """Hold the book's Black–Scholes delta at the model vol (the observation's delta column).

    Shape:
        obs: (n_paths, 5), prev_hedge: (n_paths,) → (n_paths,)
    """

    def __call__(self, obs: Tensor, prev_hedge: Tensor) -> Tensor:
        return obs[:, DELTA]


class BlackScholesDeltaGamma:
    """Delta-gamma neutral at every step (:func:`delta_gamma`), rebalanced fully each time.

    Shape:
        obs: (n_paths, n_obs), prev_hedge: (n_paths, 2) → (n_paths, 2)
    """

    n_instruments = 2

    def __init__(
        self,
        problem: HedgingProblem,
        max_options: float | None = None,
        min_gamma: float = MIN_OPTION_GAMMA,
    ) -> None:
        self.max_options = option_cap(problem) if max_options is None else max_options
        self.min_gamma = min_gamma

    def __call__(self, obs: Tensor, prev_hedge: Tensor) -> Tensor:
        return delta_gamma(obs, self.max_options, self.min_gamma)


class WhalleyWilmott:
    """Keep the position within H of the Black–Scholes delta, trading to the band's edge.

    Shape:
        obs: (n_paths, 5), prev_hedge: (n_paths,) → (n_paths,)
    """

    def __init__(self, problem: HedgingProblem, risk_aversion: float = 1.0) -> None:
        if not risk_aversion > 0.0:
            raise ValueError(f"risk aversion must be > 0, got {risk_aversion}")
        self.problem = problem
        self.risk_aversion = risk_aversion

    def __call__(self, obs: Tensor, prev_hedge: Tensor) -> Tensor:
        p = self.problem
        spot = p.book.reference_strike * torch.exp(obs[:, LOG_MONEYNESS])
        # S·Γ from the observation's scaled gamma S·Γ·σ·√τ; then S·Γ² = (S·Γ)² / S.
        spot_gamma = obs[:, SCALED_GAMMA] / (p.sigma * obs[:, TIME_TO_EXPIRY].sqrt())
        width = whalley_wilmott_width(p.cost, spot, spot_gamma, self.risk_aversion)
        delta = obs[:, DELTA]
        return torch.clamp(prev_hedge, delta - width, delta + width)


def whalley_wilmott_width(
    cost: float, spot: Tensor, spot_gamma: Tensor, risk_aversion: float
) -> Tensor:
    """The band's half-width (3·c·S·Γ² / (2·γ))^{1/3}, from the dollar gamma S·Γ of the book
    (a portfolio's: the sum of its books'). Shape: broadcastable (...) → (...)."""
    return (1.5 * cost * spot_gamma * spot_gamma / (spot * risk_aversion)) ** (1.0 / 3.0)


# Hull & White fit where the delta is informative: deep in or out of the money the option
# barely moves with the vol, and the regressor is noise.
MV_DELTA_RANGE = (0.05, 0.95)


def _vega_per_spot(delta: Tensor) -> Tensor:
    """φ(d1) of a call from its delta Φ(d1): vega/(S·√τ), no vol needed."""
    normal = torch.distributions.Normal(0.0, 1.0)
    d1 = normal.icdf(delta.double().clamp(1e-9, 1.0 - 1e-9))
    return torch.exp(-0.5 * d1 * d1).to(delta.dtype) / (2.0 * torch.pi) ** 0.5


def minimum_variance_correction(
    coefficients: tuple[float, float, float], call_delta: Tensor
) -> Tensor:
    """φ(d1)·(a + b·δ + c·δ²) per unit of an option whose call delta (a put's is its own
    plus one: put–call parity at zero rates) is ``call_delta``: what Hull & White add to its
    BS delta. Shape: (...) → (...)."""
    a, b, c = coefficients
    return _vega_per_spot(call_delta) * (a + b * call_delta + c * call_delta * call_delta)


def fit_minimum_variance(
    call_delta: Tensor, d_spot: Tensor, d_value: Tensor, used: Tensor | None = None
) -> tuple[float, float, float]:
    """Least squares of Hull & White: ΔV − δ·ΔS = φ(d1)·ΔS·(a + b·δ + c·δ²) + ε, over the
    steps (of any options: broadcast shapes) where ``used`` holds and the call delta lies in
    :data:`MV_DELTA_RANGE`. ``d_value`` is an option's price change over the step; a put's
    residual equals its call's by parity, so calls and puts pool with their call deltas.

    Raises:
        ValueError: fewer than three steps to fit on.
    """
    delta = call_delta.double()
    low, high = MV_DELTA_RANGE
    inside = (delta > low) & (delta < high)
    inside = inside if used is None else inside & used
    if int(inside.sum()) < 3:
        raise ValueError(
            f"only {int(inside.sum())} steps have a delta in {MV_DELTA_RANGE}: cannot fit"
        )
    d_spot = d_spot.double().expand_as(delta)[inside]
    base = _vega_per_spot(delta[inside]) * d_spot
    x = torch.stack([base, base * delta[inside], base * delta[inside] ** 2], dim=1)
    y = d_value.double().expand_as(delta)[inside] - delta[inside] * d_spot
    solution = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    a, b, c = solution.tolist()
    return a, b, c


class MinimumVarianceDelta:
    """Hull & White's (2017) minimum-variance delta of a call book: δ + φ(d1)·(a + b·δ + c·δ²)
    (module docstring); ``coefficients`` from :func:`fit_minimum_variance_delta`.

    Shape:
        obs: (n_paths, n_obs), prev_hedge: (n_paths,) → (n_paths,)
    """

    def __init__(self, coefficients: tuple[float, float, float]) -> None:
        a, b, c = (float(x) for x in coefficients)
        self.coefficients = (a, b, c)

    def __call__(self, obs: Tensor, prev_hedge: Tensor) -> Tensor:
        delta = obs[:, DELTA]
        return delta + minimum_variance_correction(self.coefficients, delta)


def fit_minimum_variance_delta(
    problem: HedgingProblem, episodes: Episodes, option_price: Tensor
) -> MinimumVarianceDelta:
    """:func:`fit_minimum_variance` on a one-call book's steps, with ``option_price`` the
    book's mark at every bar (n_paths, n_steps + 1).

    On prices whose implied vol falls by ``k`` per unit of log return (a sticky-moneyness
    skew), the fitted correction is negative at the money:

    >>> from hedge_pipeline.hedging.simulator import Book
    >>> from hedge_pipeline.quant.torch_pricing import bs_greeks
    >>> problem = HedgingProblem(book=Book(strikes=(100.0,)), s0=100.0, n_steps=20,
    ...                          maturity=20 / 252)
    >>> g = torch.Generator().manual_seed(0)
    >>> log_s = (0.01 * torch.randn(400, 20, generator=g, dtype=torch.float64)).cumsum(1)
    >>> spot = 100.0 * torch.exp(torch.cat([torch.zeros(400, 1), log_s], dim=1))
    >>> tau = (20 - torch.arange(21, dtype=torch.float64)) / 252
    >>> vol = (0.2 - 1.0 * torch.log(spot / 100.0)).clamp(min=0.05)
    >>> price = bs_greeks(spot, 100.0, tau.expand_as(spot), vol, is_call=True)["price"]
    >>> episodes = Episodes(spot, tau.expand_as(spot), vol[..., None], price[:, 0],
    ...                     price[:, -1], torch.zeros(400, 20, 0))
    >>> a, b, c = fit_minimum_variance_delta(problem, episodes, price).coefficients
    >>> a + b * 0.5 + c * 0.25 < 0
    True
    """
    book = problem.book
    if len(book.strikes) != 1 or not book.is_call[0] or problem.instrument is not None:
        raise ValueError("the minimum-variance delta is fitted for a book of one call")
    delta = market_features(problem, episodes)[..., DELTA]
    coefficients = fit_minimum_variance(delta, episodes.spot.diff(dim=1), option_price.diff(dim=1))
    return MinimumVarianceDelta(coefficients)
