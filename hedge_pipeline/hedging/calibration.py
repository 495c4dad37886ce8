"""The generator of a weekly code's market, fitted on its training split alone.

θ from the realized variance of the underlying; the ratio of implied to realized variance (the
variance risk premium, which reads the variance off the ATM vol); ξ and ρ from the changes of
that variance over rebalancing intervals and their correlation with returns (the leverage
effect); the skew of the smile from the median ``iv_skew``; the hedge option's median relative
half-spread. κ is not identifiable from three weeks of one code and stays at its prior, 3 per
year (variance half-life ~2.8 months).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from hedge_pipeline.hedging.code_history import CodeHistory, CodeMarketError
from hedge_pipeline.quant.market_sim import HestonParams

__all__ = ["KAPPA_PRIOR", "Calibration", "calibrate"]

KAPPA_PRIOR = 3.0


@dataclass(frozen=True)
class Calibration:
    """The generator's parameters and the reference vol, fitted on the training split.

    ``implied_ratio`` = mean ATM implied variance / realized variance: v = atm_iv² / ratio.
    """

    heston: HestonParams
    implied_ratio: float
    skew: float
    sigma_ref: float
    realized_vol: float
    bars: int
    option_relative_half_spread: float = math.nan  # median over the split, hedge option only

    def as_dict(self) -> dict[str, float]:
        """Flat: the fitted Heston θ, κ, ξ, ρ, then every other field in declaration order.

        v0 is left out: a simulated window starts from the variance of its own start bar.
        """
        h = self.heston
        fitted = {"theta": h.theta, "kappa": h.kappa, "xi": h.xi, "rho": h.rho}
        return fitted | {f.name: getattr(self, f.name) for f in fields(self) if f.name != "heston"}


def calibrate(history: CodeHistory, rebalance_bars: int) -> Calibration:
    """Fit the generator to the training split (module docstring); ξ and ρ from changes over
    ``rebalance_bars`` bars, where the ATM vol's quote noise matters less than bar to bar."""
    train = np.flatnonzero(history.split == "train")
    if train.size < 4 * rebalance_bars:
        raise CodeMarketError(
            f"{history.weekly_code}: the training split holds {train.size} bars, too few to "
            f"calibrate on intervals of {rebalance_bars} bars"
        )
    spot, years = history.spot[train], history.years[train]
    r, dy = np.diff(np.log(spot)), np.diff(years)
    theta = float(np.sum(r * r) / np.sum(dy))
    implied = history.atm_iv[train] ** 2
    ratio = float(np.mean(implied) / theta)
    v = implied / ratio
    idx = np.arange(0, train.size, rebalance_bars)
    dv, rk = np.diff(v[idx]), np.diff(np.log(spot[idx]))
    dt = np.diff(years[idx])
    xi = float(np.sqrt(np.sum(dv * dv) / np.sum(v[idx][:-1] * dt)))
    # Correlation is undefined when the variance never moves: no leverage then.
    rho = float(np.clip(np.corrcoef(rk, dv)[0, 1], -0.99, 0.99)) if dv.std() > 0 else 0.0
    heston = HestonParams(v0=theta, theta=theta, kappa=KAPPA_PRIOR, xi=max(xi, 1e-4), rho=rho)
    return Calibration(
        heston=heston,
        implied_ratio=ratio,
        skew=float(np.nanmedian(history.iv_skew[train])),
        sigma_ref=float(np.sqrt(np.mean(implied))),
        realized_vol=math.sqrt(theta),
        bars=int(train.size),
        option_relative_half_spread=(
            float(np.median(history.instrument_half_spread[train] / history.instrument_mid[train]))
            if history.instrument is not None
            else math.nan
        ),
    )
