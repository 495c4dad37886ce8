"""Every weekly code on one underlying as one market: the portfolio's episodes.

The portfolio is short the books of all its codes at once (each code's selected options, with
the portfolio's weights). Codes of one underlying live staggered lives (weekly expiries, four
weeks each): at any bar a few are alive, one of them — the *front* code — days from expiry
and carrying most of the gamma. A portfolio episode is a window of ``n_steps`` decisions every
``rebalance_bars`` bars on the underlying's clock; it holds the books of every code alive over
the whole window (its bars quoted at the same times), the others are absent (mask 0).

**Time split.** Each code keeps the split of its own ``portfolio_selection`` rows, so a
window takes the split of its front code: test windows are the front code's last days, exactly
the specialists' test windows, and validation windows the front code's validation days. Codes
behind the front are then in their training split (their own test days come later, when they
are the front code): their specialists were calibrated on those bars of the underlying. That is
the one overlap of the portfolio's test set with earlier training, and it concerns the codes
whose books matter least in the window.

Training windows hold only books in their codes' training splits: at a bar of code c's
training split, the codes expiring before c (in their last days) are left out, so every code
is the front code of some training windows, as it is of validation and test windows. (Taking
only windows whose real front code is in training would leave the first code's first weeks:
one front code, at most three books.) Their start states are bars of the underlying that other
codes' validation and test windows also start from; only prices of those bars, never a path
after them, enter training, as for the specialists.

**Replay** (:meth:`PortfolioMarket.replay`) is every such window at the quoted prices.
**Simulation** (:meth:`PortfolioMarket.sample`) draws one Heston path of the underlying per
window from the front code's calibration (the front code's market), and prices every present
code's book on that same path with the code's own smile: the books move together, as they do.
With ``any_expiry`` the whole portfolio is moved closer to expiry together, as the specialists'
training windows are (:meth:`~hedge_pipeline.hedging.code_market.CodeMarket.sample`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from hedge_pipeline.hedging.code_history import SPLITS, CodeMarketError
from hedge_pipeline.hedging.code_market import CodeMarket
from hedge_pipeline.hedging.simulator import Episodes

__all__ = ["PortfolioEpisodes", "PortfolioMarket", "PortfolioWindows"]

ABSENT_TAU = 0.1  # years: a finite, harmless time to expiry in the rows of an absent code


class PortfolioEpisodes(NamedTuple):
    """A batch of portfolio windows: the common underlying and each code's episodes on it.

    An absent code's episodes hold finite filler (its book at the common price, 0.1 years
    from expiry, no premium, no context); ``present`` masks it out of every sum.

    Shape:
        spot: (n_paths, n_steps + 1); present: (n_paths, n_codes) float 0/1;
        books: one :class:`Episodes` per code, in ``PortfolioMarket.codes`` order.
    """

    spot: Tensor
    present: Tensor
    books: tuple[Episodes, ...]

    @property
    def n_paths(self) -> int:
        return self.spot.shape[0]


@dataclass(frozen=True)
class PortfolioWindows:
    """The windows of one split: the front code of each (index into the codes) and each
    code's start bar in its own history (−1: absent). Shape: front (n,), local (n, n_codes)."""

    front: np.ndarray
    local: np.ndarray

    def __len__(self) -> int:
        return int(self.front.size)


class PortfolioMarket:
    """The books of several codes of one underlying, replayed or simulated together.

    Args:
        markets: one :class:`CodeMarket` per code, all on the same underlying, with the same
            ``rebalance_bars`` and ``n_steps`` (the specialists' episodes).
    """

    def __init__(self, markets: list[CodeMarket]) -> None:
        if not markets:
            raise CodeMarketError("a portfolio needs at least one weekly code")
        shapes = {(m.k, m.n_steps) for m in markets}
        if len(shapes) != 1:
            raise CodeMarketError(
                "every code of a portfolio needs the same episodes (rebalance_bars, n_steps); "
                f"got {sorted(shapes)}"
            )
        # Front first: codes in order of expiry (the last bar's distance to it is minutes).
        self.markets = sorted(markets, key=lambda m: m.history.ts[-1])
        self.codes = tuple(m.history.weekly_code for m in self.markets)
        self.k, self.n_steps = markets[0].k, markets[0].n_steps
        self._windows = {split: self._find_windows(split) for split in SPLITS}

    def windows(self, split: str) -> PortfolioWindows:
        """The portfolio's windows of ``split`` (module docstring)."""
        windows = self._windows[split]
        if not len(windows):
            raise CodeMarketError(
                f"no {split} window of {self.n_steps} x {self.k} bars has a front code among "
                f"{', '.join(self.codes)}"
            )
        return windows

    def bootstrapped(self, seed: int) -> PortfolioMarket:
        """This market with its training windows replaced by a block bootstrap of them, drawn
        from ``seed``; its validation and test windows are this market's own.

        Each ensemble member trains on its own bootstrap so that the members' errors differ:
        members trained on the same windows from the same start barely differ, and the
        weighted mean of near-copies cannot beat the best of them (benchmarks/stages.md). A
        block is a front code's windows that start within one window's length of each other
        (neighbours share most of their bars, as the test windows' blocks of
        :func:`.evaluation.window_blocks` do); as many blocks as there are are drawn with
        replacement, each with all its windows, so a member trains on about 63 % of the
        training periods, some of them twice. Only the training split is resampled: the
        windows that choose epochs and weights, and those that test, stay the same for all.
        """
        train = self.windows("train")
        starts = train.local[np.arange(len(train)), train.front]
        span = starts // (self.n_steps * self.k)
        _, block = np.unique(train.front * (int(span.max()) + 1) + span, return_inverse=True)
        n_blocks = int(block.max()) + 1
        drawn = np.random.default_rng(seed).integers(n_blocks, size=n_blocks)
        pick = np.repeat(np.arange(len(train)), np.bincount(drawn, minlength=n_blocks)[block])
        resampled = copy.copy(self)
        resampled._windows = self._windows | {
            "train": PortfolioWindows(train.front[pick], train.local[pick])
        }
        return resampled

    def _find_windows(self, split: str) -> PortfolioWindows:
        fronts, locals_ = [], []
        for f, front in enumerate(self.markets):
            try:
                starts = front.starts(split)
            except CodeMarketError:
                continue  # this code is never the front code of a clean window of the split
            when = front.history.ts[front.windows(starts)]  # (n, n_steps + 1) timestamps
            local = np.full((starts.size, len(self.markets)), -1, dtype=np.int64)
            local[:, f] = starts
            for c, market in enumerate(self.markets):
                if c != f:
                    local[:, c] = _aligned_starts(market, when)
            if split == "train":
                # A training window never holds a book outside its code's training split: the
                # codes expiring first (in their validation or test days) are left out, and
                # f is the front code of what remains.
                for c, market in enumerate(self.markets):
                    inside = local[:, c] >= 0
                    bars = market.windows(np.where(inside, local[:, c], 0))
                    clean = (market.history.split[bars] == "train").all(axis=1)
                    local[:, c] = np.where(inside & clean, local[:, c], -1)
                local[:, :f] = -1
            # The front code is the present code that expires first: codes before f in
            # expiry order must be absent, or the window belongs to them.
            keep = (local[:, :f] < 0).all(axis=1)
            fronts.append(np.full(int(keep.sum()), f, dtype=np.int64))
            locals_.append(local[keep])
        if not fronts:
            empty = np.zeros((0, len(self.markets)), np.int64)
            return PortfolioWindows(empty[:, 0], empty)
        return PortfolioWindows(np.concatenate(fronts), np.concatenate(locals_))

    def replay(self, split: str, dtype: torch.dtype = torch.float32) -> PortfolioEpisodes:
        """Every window of ``split`` at the quoted prices."""
        windows = self.windows(split)
        return self._assemble(
            windows,
            lambda market, starts, rows: market.replay_from(starts, dtype),
            dtype,
        )

    def sample(
        self,
        n_paths: int,
        generator: torch.Generator | None = None,
        split: str = "train",
        dtype: torch.dtype = torch.float32,
        *,
        any_expiry: bool = False,
        vol_scale: tuple[float, float] = (1.0, 1.0),
    ) -> PortfolioEpisodes:
        """``n_paths`` simulated windows from random windows of ``split`` (module docstring);
        each window's start vol is scaled by a factor drawn uniformly from ``vol_scale``."""
        windows = self.windows(split)
        pick = torch.randint(len(windows), (n_paths,), generator=generator).numpy()
        chosen = PortfolioWindows(windows.front[pick], windows.local[pick])
        spot = torch.empty((n_paths, self.n_steps + 1), dtype=dtype)
        variance = torch.empty_like(spot)
        shift = torch.zeros(n_paths, dtype=dtype)
        for f, front in enumerate(self.markets):  # one path per window, from its front code
            rows = np.flatnonzero(chosen.front == f)
            if not rows.size:
                continue
            starts = chosen.local[rows, f]
            moved = None
            if any_expiry:
                moved = front.expiry_shift(starts, generator, dtype)
                shift[rows] = moved
            scale: Tensor | float = 1.0
            if vol_scale != (1.0, 1.0):
                low, high = vol_scale
                scale = low + (high - low) * torch.rand(rows.size, generator=generator, dtype=dtype)
            s, v = front.simulate(starts, generator, dtype, moved, scale)
            spot[rows], variance[rows] = s, v
        return self._assemble(
            chosen,
            lambda market, starts, rows: market.episodes_on(
                starts, spot[rows], variance[rows], shift[rows] if any_expiry else None
            ),
            dtype,
            spot=spot,
        )

    def _assemble(
        self,
        windows: PortfolioWindows,
        episodes_of: Callable[[CodeMarket, np.ndarray, np.ndarray], Episodes],
        dtype: torch.dtype,
        spot: Tensor | None = None,
    ) -> PortfolioEpisodes:
        """One batch from each present code's episodes (``episodes_of(market, starts, rows)``),
        filler elsewhere; ``spot`` is the common price, else read off the codes (replay)."""
        parts = []
        for c, market in enumerate(self.markets):
            rows = np.flatnonzero(windows.local[:, c] >= 0)
            part = episodes_of(market, windows.local[rows, c], rows) if rows.size else None
            parts.append((rows, part))
        if spot is None:  # every window holds its front code, so every row is written
            spot = torch.empty((len(windows), self.n_steps + 1), dtype=dtype)
            for rows, part in parts:
                if part is not None:
                    spot[torch.as_tensor(rows)] = part.spot
        return PortfolioEpisodes(
            spot=spot,
            present=torch.tensor(windows.local >= 0, dtype=dtype),
            books=tuple(
                _fill(market, rows, part, spot)
                for market, (rows, part) in zip(self.markets, parts, strict=True)
            ),
        )


def _aligned_starts(market: CodeMarket, when: np.ndarray) -> np.ndarray:
    """``market``'s start bar for windows at timestamps ``when`` (n, n_steps + 1), or −1 where
    the code does not quote its book at every decision time of the window (or lacks the
    history and forecast a start needs)."""
    h = market.history
    first = np.searchsorted(h.ts, when[:, 0])
    first = np.clip(first, 0, len(h) - 1)
    idx = first[:, None] + market.k * np.arange(market.n_steps + 1)
    inside = idx[:, -1] < len(h)
    idx = np.where(inside[:, None], idx, 0)
    ok = inside & (h.ts[idx] == when).all(axis=1)
    ok &= (first >= market.k) & np.isfinite(h.rv_forecast[first])
    return np.where(ok, first, -1)


def _fill(market: CodeMarket, rows: np.ndarray, part: Episodes | None, spot: Tensor) -> Episodes:
    """The code's episodes for all windows: its own where present, filler where absent."""
    n, dtype = spot.shape[0], spot.dtype
    problem = market.problem
    n_options = len(problem.book.strikes)
    filler = Episodes(
        spot=spot,
        tau=torch.full_like(spot, ABSENT_TAU),
        vol=torch.full((*spot.shape, n_options), problem.sigma, dtype=dtype),
        premium=torch.zeros(n, dtype=dtype),
        terminal_value=torch.zeros(n, dtype=dtype),
        context=torch.zeros((n, problem.n_steps, len(problem.context)), dtype=dtype),
        **(
            {
                "instrument_price": torch.zeros_like(spot),
                "instrument_vol": torch.full_like(spot, problem.sigma),
                "instrument_cost": torch.zeros_like(spot),
            }
            if problem.instrument is not None
            else {}
        ),
    )
    if part is None:
        return filler
    index = torch.as_tensor(rows)
    fields = {}
    for name, full in filler._asdict().items():
        value = getattr(part, name)
        if full is None or value is None:
            fields[name] = full
            continue
        full = full.clone()
        full[index] = value.to(dtype).expand_as(full[index])
        fields[name] = full
    return Episodes(**fields)
