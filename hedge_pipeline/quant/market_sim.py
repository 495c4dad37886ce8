"""Market generators: futures paths under GBM and Heston, and a smile driven by the variance.

These are the building blocks of every simulated market in the project: the ``synthetic``
chain source draws one long path from them, and the hedging environments draw many short ones.
Everything is pure NumPy and float64, and every random number comes from the
``numpy.random.Generator`` the caller passes in, so a seed fixes a path exactly.

Time is an arbitrary increasing grid of year fractions, not a fixed step: real quote grids
have overnight and weekend gaps, and a hedger that rebalances at 5-minute bars has to see the
same variance over a weekend as over the 5 minutes before it closes. Paths are returned as
``(n_paths, n_times)`` arrays, the first column being the start value.

The futures price is a martingale under the pricing measure (it costs nothing to enter), so
``drift`` defaults to 0; pass a drift to simulate the real-world measure.

>>> import numpy as np
>>> rng = np.random.Generator(np.random.PCG64(1))
>>> paths = simulate_heston(110.0, HestonParams(), np.linspace(0.0, 0.25, 64), rng, n_paths=4)
>>> paths.price.shape, float(paths.price[0, 0]), float(paths.variance[0, 0])
((4, 64), 110.0, 0.05)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

FloatArray = NDArray[np.float64]
Scheme = Literal["qe", "euler"]

# Andersen's switching threshold between the quadratic and the exponential QE branch.
_PSI_SWITCH = 1.5


@dataclass(frozen=True)
class HestonParams:
    """Heston variance dynamics dv = κ(θ − v)dt + ξ√v dW_v, with d⟨W_v, W_F⟩ = ρ dt.

    The defaults describe a weekly futures-option market of about 22% vol whose variance
    mean-reverts within months and falls when the price rises (ρ < 0: the leverage effect that
    produces a negative skew). They satisfy the Feller condition 2κθ ≥ ξ².
    """

    v0: float = 0.05
    theta: float = 0.05
    kappa: float = 3.0
    xi: float = 0.5
    rho: float = -0.6

    def __post_init__(self) -> None:
        if self.v0 < 0 or self.theta <= 0 or self.kappa <= 0 or self.xi <= 0:
            raise ValueError(f"need v0 >= 0 and theta, kappa, xi > 0: {self}")
        if not -1.0 <= self.rho <= 1.0:
            raise ValueError(f"rho must lie in [-1, 1]: {self.rho}")

    @property
    def feller(self) -> bool:
        """Whether 2κθ ≥ ξ², i.e. the variance never touches zero in continuous time."""
        return 2.0 * self.kappa * self.theta >= self.xi**2

    def expected_variance(self, t: ArrayLike) -> FloatArray:
        """E[v_t] = θ + (v0 − θ)·e^{−κt}: where the variance is heading, used in tests."""
        return self.theta + (self.v0 - self.theta) * np.exp(-self.kappa * np.asarray(t, float))

    def mean_variance(self, variance: ArrayLike, tau: ArrayLike) -> FloatArray:
        """Expected average variance over the next ``tau`` years given today's ``variance``.

        θ + (v − θ)(1 − e^{−κτ})/(κτ): the square root is the at-the-money implied vol of a
        Heston market to first order, so short options follow today's variance and long ones
        the long-run level θ.
        """
        v = np.asarray(variance, dtype=np.float64)
        kt = self.kappa * np.maximum(np.asarray(tau, dtype=np.float64), 1e-12)
        weight = -np.expm1(-kt) / kt
        return self.theta + (v - self.theta) * weight


@dataclass(frozen=True)
class SmileParams:
    """An SVI-shaped smile in standardized moneyness z = ln(K/F) / (σ_atm·√τ).

    iv = σ_atm·√(1 + wing·(skew·z + √(z² + 1) − 1)). Working in z rather than ln(K/F) makes
    the skew steepen as expiry nears, as it does in real weekly books, while the total
    variance grows at most linearly in |ln(K/F)| (Lee's bound), which keeps call prices
    decreasing and put prices increasing in the strike. ``skew`` < 0 lifts the put wing.
    """

    wing: float = 0.2
    skew: float = -0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.wing <= 1.0 or not -1.0 < self.skew < 1.0:
            raise ValueError(f"need 0 <= wing <= 1 and -1 < skew < 1 (positive iv): {self}")


@dataclass(frozen=True)
class MarketPaths:
    """Simulated futures prices and instantaneous variances on a time grid.

    Shape:
        times: (n_times,) year fractions; price, variance: (n_paths, n_times).
    """

    times: FloatArray
    price: FloatArray
    variance: FloatArray


def standardized_moneyness(
    variance: ArrayLike, log_moneyness: ArrayLike, tau: ArrayLike, heston: HestonParams
) -> FloatArray:
    """ln(K/F) in units of the at-the-money standard deviation to expiry, σ_atm·√τ.

    Liquidity depends on this distance rather than on ln(K/F) itself: a strike 2% away is
    far out of the money a day before expiry and close to it a month before.
    """
    tau = np.maximum(np.asarray(tau, dtype=np.float64), 1e-12)
    atm = np.sqrt(heston.mean_variance(variance, tau))
    return np.asarray(log_moneyness, dtype=np.float64) / (atm * np.sqrt(tau))


def smile_iv(
    variance: ArrayLike,
    log_moneyness: ArrayLike,
    tau: ArrayLike,
    heston: HestonParams,
    smile: SmileParams,
) -> FloatArray:
    """Implied vol for each (today's variance, ln(K/F), τ); broadcasts like NumPy.

    The level comes from the Heston variance (so quotes inherit stochastic vol and leverage),
    the shape from ``smile`` (negative skew and curvature).

    >>> iv = smile_iv(0.04, [-0.05, 0.0, 0.05], 0.1, HestonParams(v0=0.04, theta=0.04),
    ...               SmileParams())
    >>> bool(iv[0] > iv[2] > 0.0), round(float(iv[1]), 4)
    (True, 0.2)
    """
    atm = np.sqrt(heston.mean_variance(variance, tau))
    z = standardized_moneyness(variance, log_moneyness, tau, heston)
    shape = 1.0 + smile.wing * (smile.skew * z + np.sqrt(z * z + 1.0) - 1.0)
    return atm * np.sqrt(shape)


def _check_grid(times: ArrayLike, n_paths: int) -> FloatArray:
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or not np.all(np.diff(t) > 0.0):
        raise ValueError("times must be a 1-D strictly increasing grid of at least 2 points")
    if n_paths < 1:
        raise ValueError(f"n_paths must be >= 1, got {n_paths}")
    return t


def simulate_gbm(
    f0: float,
    vol: float,
    times: ArrayLike,
    rng: np.random.Generator,
    n_paths: int = 1,
    *,
    drift: float = 0.0,
) -> MarketPaths:
    """Geometric Brownian motion dF/F = drift·dt + vol·dW, sampled exactly on ``times``.

    The constant-vol reference market: Black-76 deltas hedge it perfectly in the limit of
    continuous rebalancing, which makes it the control case of every hedging experiment.
    """
    t = _check_grid(times, n_paths)
    dt = np.diff(t)
    z = rng.standard_normal((n_paths, dt.size))
    steps = (drift - 0.5 * vol * vol) * dt + vol * np.sqrt(dt) * z
    log_ret = np.concatenate([np.zeros((n_paths, 1)), np.cumsum(steps, axis=1)], axis=1)
    variance = np.full_like(log_ret, vol * vol)
    return MarketPaths(times=t, price=f0 * np.exp(log_ret), variance=variance)


def simulate_heston(
    f0: float,
    params: HestonParams,
    times: ArrayLike,
    rng: np.random.Generator,
    n_paths: int = 1,
    *,
    drift: float = 0.0,
    scheme: Scheme = "qe",
) -> MarketPaths:
    """Heston paths dF/F = drift·dt + √v dW_F on an arbitrary grid (variable dt).

    ``scheme="qe"`` is Andersen's (2008) quadratic-exponential scheme with the martingale
    correction: accurate over long steps such as a weekend, and E[F_t] = F_0·e^{drift·t}
    exactly. ``scheme="euler"`` is the full-truncation Euler scheme (Lord et al., 2010), the
    simple reference. Both consume the same normal draws (two per step and path), so the
    two schemes can be compared path by path.
    """
    t = _check_grid(times, n_paths)
    dt = np.diff(t)
    z_var, z_price = rng.standard_normal((2, dt.size, n_paths))
    if scheme == "qe":
        log_ret, var = _heston_qe(params, dt, z_var, z_price)
    elif scheme == "euler":
        log_ret, var = _heston_euler(params, dt, z_var, z_price)
    else:
        raise ValueError(f"unknown scheme {scheme!r}; expected 'qe' or 'euler'")
    log_ret += drift * (t - t[0])[:, None]
    return MarketPaths(
        times=t,
        price=np.ascontiguousarray(f0 * np.exp(log_ret).T),
        variance=np.ascontiguousarray(var.T),
    )


def _heston_euler(
    p: HestonParams, dt: FloatArray, z_var: FloatArray, z_price: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Full truncation: the drift and diffusion see max(v, 0), the state may dip below 0."""
    n_steps, n_paths = z_var.shape
    log_ret = np.zeros((n_steps + 1, n_paths))
    var = np.full((n_steps + 1, n_paths), p.v0)
    v = var[0].copy()
    rho_perp = np.sqrt(1.0 - p.rho**2)
    for i in range(n_steps):
        vp = np.maximum(v, 0.0)
        sd = np.sqrt(vp * dt[i])
        shock = p.rho * z_var[i] + rho_perp * z_price[i]
        log_ret[i + 1] = log_ret[i] - 0.5 * vp * dt[i] + sd * shock
        v = v + p.kappa * (p.theta - vp) * dt[i] + p.xi * sd * z_var[i]
        var[i + 1] = np.maximum(v, 0.0)
    return log_ret, var


def _heston_qe(
    p: HestonParams, dt: FloatArray, z_var: FloatArray, z_price: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Andersen's QE step for v and his K0..K4 discretization of ln F (γ1 = γ2 = ½)."""
    n_steps, n_paths = z_var.shape
    e = np.exp(-p.kappa * dt)
    c_v = p.xi**2 * e * (1.0 - e) / p.kappa  # conditional variance of v: c_v·v + c_0
    c_0 = p.theta * p.xi**2 * (1.0 - e) ** 2 / (2.0 * p.kappa)
    k0 = -p.rho * p.kappa * p.theta * dt / p.xi
    k1 = 0.5 * dt * (p.kappa * p.rho / p.xi - 0.5) - p.rho / p.xi
    k2 = 0.5 * dt * (p.kappa * p.rho / p.xi - 0.5) + p.rho / p.xi
    k3 = 0.5 * dt * (1.0 - p.rho**2)
    a_mgf = k2 + 0.5 * k3  # K4 = K3 with γ1 = γ2
    log_ret = np.zeros((n_steps + 1, n_paths))
    var = np.full((n_steps + 1, n_paths), p.v0)
    for i in range(n_steps):
        v = var[i]
        m = p.theta + (v - p.theta) * e[i]
        v_next, log_mgf = _qe_variance_step(m, c_v[i] * v + c_0[i], z_var[i], a_mgf[i])
        # Martingale correction: choose K0 so that E[F_{t+dt} | v_t] = F_t; where the moment
        # generating function does not exist (only possible for rho > 0) keep Andersen's K0.
        k0_star = np.where(np.isfinite(log_mgf), -log_mgf - (k1[i] + 0.5 * k3[i]) * v, k0[i])
        diffusion = np.sqrt(k3[i] * (v + v_next)) * z_price[i]
        log_ret[i + 1] = log_ret[i] + k0_star + k1[i] * v + k2[i] * v_next + diffusion
        var[i + 1] = v_next
    return log_ret, var


def _qe_variance_step(
    m: FloatArray, s2: FloatArray, z: FloatArray, a: float
) -> tuple[FloatArray, FloatArray]:
    """Next variance from its conditional mean ``m`` and variance ``s2``, and ln E[e^{a·v'}].

    Low dispersion (ψ = s²/m² ≤ 1.5): v' = α(β + Z)², a scaled non-central χ² with matched
    moments. High dispersion: a point mass at 0 plus an exponential tail, sampled by inverting
    its distribution function at U = Φ(Z). Each branch is evaluated on its own clipped ψ so
    that no NaN is ever formed.
    """
    psi = s2 / (m * m)
    quadratic = psi <= _PSI_SWITCH
    inv = 2.0 / np.minimum(psi, _PSI_SWITCH)
    b2 = inv - 1.0 + np.sqrt(inv) * np.sqrt(inv - 1.0)
    alpha = m / (1.0 + b2)
    v_quad = alpha * (np.sqrt(b2) + z) ** 2
    psi_e = np.maximum(psi, _PSI_SWITCH)
    p0 = (psi_e - 1.0) / (psi_e + 1.0)
    beta = (1.0 - p0) / m
    tail = ndtr(-z)  # 1 − U, exact in the far tail where 1 − Φ(z) would round to 0
    with np.errstate(divide="ignore", invalid="ignore"):
        v_exp = np.where(tail >= 1.0 - p0, 0.0, np.log((1.0 - p0) / tail) / beta)
        one_minus = 1.0 - 2.0 * a * alpha
        mgf_quad = a * b2 * alpha / one_minus - 0.5 * np.log(one_minus)
        mgf_exp = np.log(p0 + beta * (1.0 - p0) / (beta - a))
    mgf_quad = np.where(one_minus > 0.0, mgf_quad, np.inf)
    mgf_exp = np.where(beta > a, mgf_exp, np.inf)
    return np.where(quadratic, v_quad, v_exp), np.where(quadratic, mgf_quad, mgf_exp)
