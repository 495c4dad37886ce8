"""Hedging episodes from the weekly codes of a price history, for walk-forward tests.

A specialist replays windows of one code (``code_market``). A walk-forward test asks another
question: trained on every code that expired before a date, how does a hedger do on the codes
listed after it? Each episode here is one call of one code, sold at the mid ``n_steps``
daily bars before expiry and hedged daily with the underlying until its last bar, where the
book is marked at its mid (the intrinsic value at expiry). Calls only: under put–call parity a
put of the same strike, delta hedged, has the same P&L.

Prices are scaled per episode so that the strike is 100: a P&L is then in percent of the
strike, and episodes from 1999 and 2018 (S&P 500 at 1,200 and 2,800) are comparable and can
share one :class:`~hedge_pipeline.hedging.simulator.HedgingProblem` (one call of strike 100).
The vol of each bar is the option's own implied vol (the Black–Scholes hedges then use the
current vol, as a desk does); a bar without an ok IV carries the option's last one (the first
bars: the next one; none at all: the ATM vol). The context columns are read per bar from the
features (``atm_iv``) or from ``market``, a frame of daily market state keyed by ``ts``
(e.g. the underlying's trailing realized vol), all known at that bar. Context a caller makes
per test period (a vol forecast fitted at its start) joins later, by each decision bar's
trading day (``days``, :meth:`HistoryEpisodes.with_context`).

>>> import numpy as np, polars as pl
>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2008, 10, 1, 20, tzinfo=timezone.utc)
>>> ts = [t0 + timedelta(days=i) for i in range(4)]
>>> rows = pl.DataFrame({
...     "weekly_code": "X-2008-10-04", "option_symbol": "X_C100", "option_type": "C",
...     "ts": ts, "strike": 100.0, "underlying_price": [100.0, 102.0, 99.0, 101.0],
...     "tau": [3 / 365, 2 / 365, 1 / 365, 0.0], "mid": [1.2, 2.3, 0.4, 1.0],
...     "iv": [0.2, 0.21, None, None], "iv_status": ["ok", "ok", "no_quote", "expired"],
...     "atm_iv": 0.2, "expiry": ts[-1]})
>>> found = history_episodes(rows, n_steps=3, context=("atm_iv",))
>>> len(found), found.episodes.spot.shape
(1, torch.Size([1, 4]))
>>> [round(v, 4) for v in found.episodes.vol[0, :, 0].tolist()]  # the last ok IV carried
[0.2, 0.21, 0.21, 0.21]
>>> round(float(found.episodes.premium[0]), 4), float(found.episodes.terminal_value[0])
(1.2, 1.0)
>>> str(found.days[0, 0]), found.with_context(np.ones((1, 3, 1))).episodes.context.shape
('2008-10-01', torch.Size([1, 3, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl
import torch

from hedge_pipeline.hedging.simulator import Book, Episodes, HedgingProblem

__all__ = ["STRIKE", "HistoryEpisodes", "history_episodes", "history_problem"]

STRIKE = 100.0  # every episode is scaled to this strike: P&L in percent of the strike
TRADING_DAYS = 252


@dataclass(frozen=True)
class HistoryEpisodes:
    """One episode per call option: its code, first bar, expiry and strike (unscaled) beside
    the scaled :class:`Episodes` and its mids ``mid`` (n, n_steps + 1), scaled like them, and
    the trading day of each decision bar ``days`` (n, n_steps)."""

    code: np.ndarray
    start: np.ndarray  # datetime64[us], UTC: the bar the call is sold at
    expiry: np.ndarray  # datetime64[us], UTC
    strike: np.ndarray
    mid: torch.Tensor
    episodes: Episodes
    days: np.ndarray  # datetime64[D]: daily bars are stamped at the close, the UTC date

    def __len__(self) -> int:
        return int(self.code.size)

    def take(self, which: np.ndarray) -> HistoryEpisodes:
        """The episodes at ``which`` (a boolean mask or indices), in that order."""
        index = np.flatnonzero(which) if np.asarray(which).dtype == bool else np.asarray(which)
        rows = torch.as_tensor(index, dtype=torch.long)
        return HistoryEpisodes(
            code=self.code[index],
            start=self.start[index],
            expiry=self.expiry[index],
            strike=self.strike[index],
            mid=self.mid[rows],
            episodes=Episodes(*(None if t is None else t[rows] for t in self.episodes)),
            days=self.days[index],
        )

    def with_context(self, values: np.ndarray) -> HistoryEpisodes:
        """The same episodes with ``values`` (n, n_steps, k) after their context columns: per-bar
        state made for one period only (a forecast from models fitted at its start), which
        :func:`history_episodes`' one pass over every code cannot hold."""
        extra = torch.as_tensor(values, dtype=torch.float32)
        context = self.episodes.context
        joined = extra if context is None else torch.cat([context, extra], dim=-1)
        return replace(self, episodes=self.episodes._replace(context=joined))


def history_problem(
    n_steps: int, cost: float, context: tuple[str, ...] = (), sigma: float = 0.2
) -> HedgingProblem:
    """The problem every history episode shares: one short call of strike :data:`STRIKE`,
    ``n_steps`` daily decisions. ``sigma`` only scales the gamma feature (the Greeks use each
    bar's implied vol)."""
    return HedgingProblem(
        book=Book(strikes=(STRIKE,)),
        s0=STRIKE,
        sigma=sigma,
        maturity=n_steps / TRADING_DAYS,
        n_steps=n_steps,
        cost=cost,
        context=context,
    )


def history_episodes(
    features: pl.DataFrame,
    n_steps: int,
    context: tuple[str, ...] = (),
    market: pl.DataFrame | None = None,
) -> HistoryEpisodes:
    """Every call of ``features`` (``greeks_features`` rows of any number of codes) quoted at
    least ``n_steps + 1`` bars, as the episode of its last ``n_steps + 1`` bars.

    ``context`` names per-bar columns of ``features`` or of ``market`` (joined on ``ts``);
    a null context value at a decision bar is an error, since a hedger would act on a guess.
    """
    calls = features.filter(pl.col("option_type") == "C")
    if market is not None:
        calls = calls.join(market, on="ts", how="left")
    missing = [c for c in context if c not in calls.columns]
    if missing:
        raise ValueError(f"context columns {missing} are neither in the features nor in market")
    length = n_steps + 1
    bars = (
        calls.sort("option_symbol", "ts")
        .with_columns(
            _vol=pl.when(pl.col("iv_status") == "ok").then(pl.col("iv")),
            _n=pl.len().over("option_symbol"),
        )
        .filter(pl.col("_n") >= length)
        .group_by("option_symbol", maintain_order=True)
        .tail(length)
        .with_columns(
            _vol=pl.col("_vol")
            .forward_fill()
            .backward_fill()
            .over("option_symbol")
            .fill_null(pl.col("atm_iv"))
        )
    )
    n = bars.height // length
    if bars.filter(pl.col("_vol").is_null()).height:
        raise ValueError("an episode's bar has neither an ok implied vol nor an ATM vol")

    def grid(column: str) -> np.ndarray:
        return bars[column].to_numpy().reshape(n, length)

    scale = STRIKE / grid("strike")[:, 0]
    spot = grid("underlying_price") * scale[:, None]
    mid = grid("mid") * scale[:, None]
    ctx = np.zeros((n, n_steps, len(context)))
    for i, column in enumerate(context):
        ctx[..., i] = grid(column)[:, :-1].astype(float)  # decision bars only
        if np.isnan(ctx[..., i]).any():
            raise ValueError(f"context column {column!r} is null at a decision bar")
    first = bars.group_by("option_symbol", maintain_order=True).first()

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x, dtype=torch.float32)

    return HistoryEpisodes(
        code=first["weekly_code"].to_numpy(),
        start=first["ts"].dt.replace_time_zone(None).to_numpy(),
        expiry=first["expiry"].dt.replace_time_zone(None).to_numpy(),
        strike=first["strike"].to_numpy(),
        mid=tensor(mid),
        episodes=Episodes(
            spot=tensor(spot),
            tau=tensor(grid("tau")),
            vol=tensor(grid("_vol"))[..., None],
            premium=tensor(mid[:, 0]),
            terminal_value=tensor(mid[:, -1]),
            context=tensor(ctx),
        ),
        days=grid("ts")[:, :-1].astype("datetime64[D]"),
    )
