"""One weekly code as a hedging market: its windows replayed, or simulated from its calibration.

A specialist hedges the book its portfolio selection is short in one weekly code
(docs/design.md §7). Its episodes are windows of that code's life: a start bar, then ``n_steps``
decisions every ``rebalance_bars`` bars (30 minutes at 6 five-minute bars), the book sold at its
mark at the start and bought back at its mark at the end (at expiry, its payoff). Two sources of
windows:

* **Replay** (:meth:`CodeMarket.replay`): the code's own prices. Spot is the underlying, the
  book's marks are the quoted mids, the Greeks use each option's implied vol at the bar
  (carried forward over bars where it was not quoted). Windows lie inside one split of the
  portfolio's time split, so test windows never see a training bar.
* **Simulation** (:meth:`CodeMarket.sample`): Heston paths started from the state of a real bar
  of the split (its futures price, its variance read off the ATM vol) and stepped on the real
  bar clock of the window, overnight and weekend gaps included, so a simulated window lasts
  the calendar time its historical twin does. Parameters come from the training split alone
  (:mod:`~hedge_pipeline.hedging.calibration`). Marks of the book are Black–Scholes at the
  calibrated smile: ATM vol √(ratio·v), plus skew × standardized moneyness.

Observations carry three context columns besides the simulator's market features:

* ``rv_forecast`` and ``rv_forecast_std``: the frozen CNN-LSTM's realized-vol forecast and its
  MC-dropout std at the window's start bar (the latest forecast at or before it, never a later
  one), divided by the reference vol. Held through the window in both replay and simulation, so
  a policy trained on simulated windows sees the same kind of input in replay.
* ``turbulence``: FinRL's turbulence index for one asset, (r − μ)²/σ² of the underlying's log
  return over the last rebalancing interval, with μ = 0 and σ² = θ·Δt from the training split
  (the interval before the start at t = 0, from history in both sources), capped at 25.
* ``log_next_interval``: log of the calendar length of the coming interval over the code's
  median one: 0 within a session, about 3.5 before a night, 4.5 before a weekend. The schedule
  is known in advance, and a night carries the variance of ~35 intraday intervals (synthetic
  data: the calendar clock), which no Greek at the current bar says.

Rates are zero inside the simulator (the underlying is a future; the discounting of a few weeks'
options at 4.5 % moves their marks by < 0.4 %), costs are the problem's.

``hedge_pipeline_tests/hedging/test_code_market.py`` works through one synthetic code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from hedge_pipeline.hedging.calibration import calibrate
from hedge_pipeline.hedging.code_history import SPLITS, CodeHistory, CodeMarketError
from hedge_pipeline.hedging.simulator import (
    Episodes,
    HedgingProblem,
    book_greeks,
    option_price,
)

__all__ = ["CONTEXT", "CodeMarket"]

CONTEXT = ("rv_forecast", "rv_forecast_std", "turbulence", "log_next_interval")
TURBULENCE_CAP = 25.0
MIN_VOL = 0.01  # floor of a simulated smile vol: deep wings of a steep skew


class CodeMarket:
    """Episodes of one code's book: replayed from history or simulated from its calibration.

    Args:
        history: the code's bars (:func:`code_history`).
        rebalance_bars: bars between two decisions.
        n_steps: decisions per episode; a window spans ``rebalance_bars · n_steps`` bars.
        cost, slippage, fixed_fee: the hedge's transaction costs (see ``HedgingProblem``).
        hedge_option: trade the history's hedge option too (delta-gamma), when it has one; its
            trades pay the quoted half-spread in replay, the calibrated relative half-spread
            of its model price in simulation.
    """

    def __init__(
        self,
        history: CodeHistory,
        rebalance_bars: int,
        n_steps: int,
        cost: float = 0.0,
        slippage: float = 0.0,
        fixed_fee: float = 0.0,
        hedge_option: bool = True,
    ) -> None:
        if rebalance_bars < 1 or n_steps < 1:
            raise CodeMarketError(
                f"rebalance_bars and n_steps must be >= 1, got {rebalance_bars} and {n_steps}"
            )
        self.history, self.k, self.n_steps = history, rebalance_bars, n_steps
        self.calibration = calibrate(history, rebalance_bars)
        span = rebalance_bars * n_steps
        self.problem = HedgingProblem(
            book=history.book,
            s0=float(history.spot[0]),
            sigma=self.calibration.sigma_ref,
            maturity=float(np.median(history.tau[: len(history) - span] - history.tau[span:])),
            n_steps=n_steps,
            cost=cost,
            slippage=slippage,
            fixed_fee=fixed_fee,
            context=CONTEXT,
            instrument=history.instrument if hedge_option else None,
        )
        self._starts = {split: self._valid_starts(split) for split in SPLITS}
        self._median_interval = float(
            np.median(history.years[rebalance_bars:] - history.years[:-rebalance_bars])
        )

    @property
    def span(self) -> int:
        """Bars from an episode's first decision to its end."""
        return self.k * self.n_steps

    def starts(self, split: str) -> np.ndarray:
        """Bar indices where a window of ``split`` may start (all its bars in the split)."""
        return self._starts[split]

    def _valid_starts(self, split: str) -> np.ndarray:
        """Bars of ``split`` whose whole window lies in ``split`` (and after one interval of
        history, which the turbulence at t = 0 reads), with a CNN-LSTM forecast."""
        h, span = self.history, self.span
        inside = np.flatnonzero(h.split == split)
        if inside.size == 0:
            raise CodeMarketError(f"{h.weekly_code}: the {split} period holds no bar")
        if inside.size <= span:
            last = inside[-1]
            raise CodeMarketError(
                f"{h.weekly_code}: an episode of {self.n_steps} steps x {self.k} bars "
                f"({span} bars) runs past the {split} period, which holds {inside.size} bars "
                f"and ends {_when(h.ts[last])} (the book expires "
                f"{h.tau[last] * 365:.2f} days later)"
            )
        ends = inside + span
        in_split = np.zeros(inside.size, dtype=bool)
        within = ends < len(h)
        in_split[within] = h.split[ends[within]] == split
        ok = in_split & (inside >= self.k) & np.isfinite(h.rv_forecast[inside])
        starts = inside[ok]
        if starts.size == 0:
            raise CodeMarketError(
                f"{h.weekly_code}: no {split} bar starts an episode with a CNN-LSTM forecast "
                f"available (episodes of {span} bars)"
            )
        return starts

    def windows(self, starts: np.ndarray) -> np.ndarray:
        """Bar indices of each window's decision times, (n, n_steps + 1)."""
        return starts[:, None] + self.k * np.arange(self.n_steps + 1)

    def _context(
        self, starts: np.ndarray, spot: Tensor, before: Tensor, dt: Tensor, ahead: Tensor
    ) -> Tensor:
        """Context columns (n, n_steps, 4) of windows from ``starts`` with prices ``spot``;
        ``dt`` the interval before each decision, ``ahead`` the one after it (years)."""
        h, cal = self.history, self.calibration
        dtype = spot.dtype
        # r_t: the log return over the interval ending at decision t (before the start at t = 0)
        r = torch.log(torch.cat([before.unsqueeze(1), spot[:, :-1]], dim=1)).diff(dim=1)
        turbulence = (r * r / (cal.heston.theta * dt)).clamp(max=TURBULENCE_CAP)
        held = torch.tensor(
            np.stack([h.rv_forecast[starts], h.rv_forecast_std[starts]], axis=1) / cal.sigma_ref,
            dtype=dtype,
        )
        held = held.unsqueeze(1).expand(-1, self.n_steps, -1)
        next_interval = torch.log(ahead / self._median_interval)
        return torch.cat([held, turbulence.unsqueeze(-1), next_interval.unsqueeze(-1)], dim=-1)

    def _intervals(self, idx: np.ndarray, dtype: torch.dtype) -> Tensor:
        """Calendar years before each decision: the interval ending at decision t (t = 0: the
        interval before the start). Shape: (n, n_steps)."""
        h = self.history
        prev = np.concatenate([idx[:, :1] - self.k, idx[:, :-2]], axis=1)
        return torch.tensor(h.years[idx[:, :-1]] - h.years[prev], dtype=dtype)

    def _ahead(self, idx: np.ndarray, dtype: torch.dtype) -> Tensor:
        """Calendar years from each decision to the next. Shape: (n, n_steps)."""
        return torch.tensor(np.diff(self.history.years[idx], axis=1), dtype=dtype)

    def replay(self, split: str, dtype: torch.dtype = torch.float32) -> Episodes:
        """Every window of ``split`` (stride one bar), at the quoted prices."""
        return self.replay_from(self.starts(split), dtype)

    def replay_from(self, starts: np.ndarray, dtype: torch.dtype = torch.float32) -> Episodes:
        """The windows starting at bars ``starts`` (valid starts: :meth:`starts`), as quoted."""
        h = self.history
        idx = self.windows(starts)
        spot = torch.tensor(h.spot[idx], dtype=dtype)
        weights = np.asarray(h.book.weights)
        before = torch.tensor(h.spot[starts - self.k], dtype=dtype)
        option = {}
        if self.problem.instrument is not None:
            option = {
                "instrument_price": torch.tensor(h.instrument_mid[idx], dtype=dtype),
                "instrument_vol": torch.tensor(h.instrument_iv[idx], dtype=dtype),
                "instrument_cost": torch.tensor(h.instrument_half_spread[idx], dtype=dtype),
            }
        return Episodes(
            spot=spot,
            tau=torch.tensor(h.tau[idx], dtype=dtype),
            vol=torch.tensor(h.iv[idx], dtype=dtype),
            premium=torch.tensor(h.mid[idx[:, 0]] @ weights, dtype=dtype),
            terminal_value=torch.tensor(h.mid[idx[:, -1]] @ weights, dtype=dtype),
            context=self._context(
                starts, spot, before, self._intervals(idx, dtype), self._ahead(idx, dtype)
            ),
            **option,
        )

    def sample(
        self,
        n_paths: int,
        generator: torch.Generator | None = None,
        split: str = "train",
        dtype: torch.dtype = torch.float32,
        *,
        any_expiry: bool = False,
        group: int = 1,
    ) -> Episodes:
        """``n_paths`` simulated windows started from random bars of ``split``.

        With ``any_expiry`` each window keeps its bar clock but is moved to a random distance
        from expiry, from where it started to ending at the last bar: the training split lies
        weeks before expiry and the test split in the last days, where gamma is many times
        larger; a policy trained only at the former meets the latter for the first time in
        the test. The start price then diffuses over the time the window was moved by, so those
        windows meet the book at every moneyness, not only where the training split traded.
        Only the calendar is moved (the expiry date is known in advance), and no price of a
        later split is read.

        With ``group`` > 1 the windows come in ``n_paths / group`` consecutive groups that
        share one start state (bar, expiry shift and start price) and differ only in the
        paths that follow it: the risk of a hedge *from that state* can then be measured,
        which is what a user hedging from today's state is exposed to
        (:class:`~hedge_pipeline.stages.specialists.objective.PerStateObjective`). ``group=1`` draws
        exactly what it drew before groups existed.
        """
        if group < 1 or n_paths % group:
            raise ValueError(f"n_paths ({n_paths}) must be a multiple of group ({group}) >= 1")
        candidates = self.starts(split)
        pick = torch.randint(candidates.size, (n_paths // group,), generator=generator).numpy()
        starts = candidates[pick]
        shift = self.expiry_shift(starts, generator, dtype) if any_expiry else None
        moved = None
        if group > 1:
            if shift is not None:
                moved = torch.randn(starts.size, generator=generator, dtype=dtype)
                moved, shift = moved.repeat_interleave(group), shift.repeat_interleave(group)
            starts = np.repeat(starts, group)
        spot, variance = self.simulate(starts, generator, dtype, shift, moved=moved)
        return self.episodes_on(starts, spot, variance, shift)

    def expiry_shift(
        self, starts: np.ndarray, generator: torch.Generator | None, dtype: torch.dtype
    ) -> Tensor:
        """Years to move each window from ``starts`` closer to expiry, uniform between none and
        ending at the code's last bar (see :meth:`sample`). Shape: → (n,)."""
        tau = self.history.tau[self.windows(starts)]
        end = torch.tensor(tau[:, -1], dtype=dtype)  # distance to expiry after the window
        last = float(self.history.tau[-1])  # the code's last bar, minutes before expiry
        return torch.rand(starts.size, generator=generator, dtype=dtype) * (end - last)

    def simulate(
        self,
        starts: np.ndarray,
        generator: torch.Generator | None,
        dtype: torch.dtype = torch.float32,
        shift: Tensor | None = None,
        vol_scale: Tensor | float = 1.0,
        moved: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Heston prices and variances of windows from ``starts`` on their real bar clock.

        ``shift`` (years, per window) moves a window closer to expiry (see :meth:`sample`):
        the start price then diffuses over the shift, by ``moved`` standard deviations (per
        window; drawn here when None). ``vol_scale`` (per window or one)
        multiplies the start vol: a calmer or stormier regime than the bar's (a curriculum).
        Shape: → (n, n_steps + 1) each.
        """
        dt = self._ahead(self.windows(starts), dtype)
        v = self._start_variance(starts, dtype) * torch.as_tensor(vol_scale, dtype=dtype) ** 2
        log_s0 = torch.log(torch.tensor(self.history.spot[starts], dtype=dtype))
        if shift is not None:
            # The price diffuses over the time the window was moved by (at the start variance,
            # a martingale), so windows near expiry meet the book at every moneyness.
            diffusion = (v * shift).sqrt()
            if moved is None:
                moved = torch.randn(starts.size, generator=generator, dtype=dtype)
            log_s0 = log_s0 + diffusion * moved - 0.5 * diffusion * diffusion
        return self._heston(log_s0, v, dt, generator)

    def _start_variance(self, bars: np.ndarray, dtype: torch.dtype) -> Tensor:
        """The Heston variance at ``bars``, read off their ATM implied vol."""
        h, cal = self.history, self.calibration
        return torch.tensor(h.atm_iv[bars] ** 2 / cal.implied_ratio, dtype=dtype)

    def _heston(
        self, log_s0: Tensor, v: Tensor, dt: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Full-truncation Euler of the calibrated Heston model on the clock ``dt`` (years).

        Shape: log_s0, v: (n,), dt: (n, T) → prices, variances: (n, T + 1) each.
        """
        p, (n_paths, n_steps), dtype = self.calibration.heston, dt.shape, dt.dtype
        z = torch.randn((n_paths, n_steps), generator=generator, dtype=dtype)
        z_var = torch.randn((n_paths, n_steps), generator=generator, dtype=dtype)
        shock = p.rho * z_var + math.sqrt(1.0 - p.rho**2) * z
        log_s, variances = [log_s0], [v]
        for t in range(n_steps):
            vp = v.clamp(min=0.0)
            sd = (vp * dt[:, t]).sqrt()
            log_s.append(log_s[-1] - 0.5 * vp * dt[:, t] + sd * shock[:, t])
            v = v + p.kappa * (p.theta - vp) * dt[:, t] + p.xi * sd * z_var[:, t]
            variances.append(v)
        return torch.exp(torch.stack(log_s, dim=1)), torch.stack(variances, dim=1)

    def simulated_replays(
        self,
        n_paths: int,
        generator: torch.Generator | None = None,
        split: str = "test",
        dtype: torch.dtype = torch.float32,
    ) -> Episodes:
        """``n_paths`` simulated twins of :meth:`replay`: each one continuous Heston path
        through the split's bars, from the state of the bar one interval before its first
        window, cut into the replay's windows (stride one bar, same clock). Twin j's windows
        are rows ``j·w … (j + 1)·w − 1`` of the result, ``w = starts(split).size``.

        A replayed split is one path: its windows overlap, so a code's last days make two or
        three independent stretches, and its ES 10 % is decided by one or two moves. Scoring
        hedgers on the twins says how often a hedger wins a test of that size by chance.
        """
        starts, h = self.starts(split), self.history
        first = int(starts[0]) - self.k
        bars = np.arange(first, int(starts[-1]) + self.span + 1)
        dt = torch.tensor(np.diff(h.years[bars]), dtype=dtype).expand(n_paths, -1)
        v = self._start_variance(np.full(n_paths, first), dtype)
        log_s0 = torch.log(torch.tensor(h.spot[first], dtype=dtype)).expand(n_paths)
        path, variance = self._heston(log_s0, v, dt, generator)
        idx = self.windows(starts) - first  # (w, n_steps + 1), columns of the path
        spot, variance = path[:, idx].flatten(0, 1), variance[:, idx].flatten(0, 1)
        before = path[:, starts - self.k - first].flatten()
        return self.episodes_on(np.tile(starts, n_paths), spot, variance, before=before)

    def episodes_on(
        self,
        starts: np.ndarray,
        spot: Tensor,
        variance: Tensor,
        shift: Tensor | None = None,
        before: Tensor | None = None,
    ) -> Episodes:
        """The book's episodes on simulated ``spot``/``variance`` paths of windows from
        ``starts`` (moved ``shift`` years closer to expiry): marks at the calibrated smile.
        ``before`` is the price one interval before each start, which the turbulence at t = 0
        reads (default: the history's; a simulated path passes its own).

        A portfolio prices every code it holds on one simulated path of their underlying.
        """
        h, cal, dtype = self.history, self.calibration, spot.dtype
        idx = self.windows(starts)
        tau = torch.tensor(h.tau[idx], dtype=dtype)
        if shift is not None:
            tau = tau - shift.unsqueeze(1)
        vol = self._smile(spot, tau, variance, self.history.book.strikes)
        values = book_greeks(self.problem, spot, tau, vol)["price"]
        option = {}
        if (instrument := self.problem.instrument) is not None:
            option_vol = self._smile(spot, tau, variance, (instrument.strike,))[..., 0]
            price = option_price(self.problem, spot, tau, option_vol)
            option = {
                "instrument_price": price,
                "instrument_vol": option_vol,
                "instrument_cost": cal.option_relative_half_spread * price,
            }
        if before is None:
            before = torch.tensor(h.spot[starts - self.k], dtype=dtype)
        return Episodes(
            spot=spot,
            tau=tau,
            vol=vol,
            premium=values[:, 0],
            terminal_value=values[:, -1],
            context=self._context(
                starts, spot, before, self._intervals(idx, dtype), self._ahead(idx, dtype)
            ),
            **option,
        )

    def _smile(
        self, spot: Tensor, tau: Tensor, variance: Tensor, strikes: tuple[float, ...]
    ) -> Tensor:
        """Implied vol at each strike: √(ratio·v) plus skew × standardized moneyness.

        Shape: (n, T) each → (n, T, len(strikes))
        """
        cal = self.calibration
        atm = (cal.implied_ratio * variance.clamp(min=0.0)).sqrt().clamp(min=MIN_VOL)
        strikes = torch.tensor(strikes, dtype=spot.dtype)
        sd = (atm * tau.clamp(min=1e-12).sqrt()).unsqueeze(-1)
        x = torch.log(strikes / spot.unsqueeze(-1)) / sd
        return (atm.unsqueeze(-1) + cal.skew * x).clamp(min=MIN_VOL)


def _when(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="m"))
