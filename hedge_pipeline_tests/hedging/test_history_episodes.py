"""Episodes of a real history's weekly codes: their shape, scale and what they may read."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from hedge_pipeline.hedging.history_episodes import STRIKE, history_episodes, history_problem
from hedge_pipeline.hedging.simulator import pnl
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.history import HistorySource


@pytest.fixture(scope="module")
def features() -> pl.DataFrame:
    source = HistorySource("sp500")
    codes = ["SP500-2008-10-17", "SP500-2008-10-24", "SP500-2016-01-08"]
    return compute_features(pl.concat([source.load(code) for code in codes]))


def test_one_episode_per_call_scaled_to_a_strike_of_100(features: pl.DataFrame) -> None:
    found = history_episodes(features, n_steps=18)
    calls = features.filter(pl.col("option_type") == "C")
    assert len(found) == calls["option_symbol"].n_unique() == 27
    assert found.episodes.spot.shape == (27, 19)
    # Spot over strike, in percent: a call's strike maps to 100 whatever the index level.
    spot = features.filter(pl.col("weekly_code") == found.code[0])["underlying_price"]
    assert found.episodes.spot[0, -1] == pytest.approx(
        STRIKE * float(spot.to_numpy()[-1]) / float(found.strike[0]), rel=1e-6
    )
    # Sold at the mid of the first bar, marked at the last (the expiry: intrinsic).
    assert torch.equal(found.episodes.premium, found.mid[:, 0])
    intrinsic = (found.episodes.spot[:, -1] - STRIKE).clamp(min=0.0)
    assert torch.allclose(found.episodes.terminal_value, intrinsic, atol=0.02)
    assert (found.episodes.tau[:, -1] == 0).all()


def test_the_episode_of_a_code_reads_only_its_own_bars(features: pl.DataFrame) -> None:
    found = history_episodes(features, n_steps=18)
    for code, start, expiry in zip(found.code, found.start, found.expiry, strict=True):
        bars = features.filter(pl.col("weekly_code") == code)["ts"].dt.replace_time_zone(None)
        assert bars.min() <= start and bars.max() == expiry


def test_context_from_market_state_must_cover_every_decision(features: pl.DataFrame) -> None:
    ts = features["ts"].unique().sort()
    market = pl.DataFrame({"ts": ts, "level": np.arange(ts.len(), dtype=float)})
    found = history_episodes(features, 18, ("atm_iv", "level"), market)
    assert found.episodes.context.shape == (27, 18, 2)
    with pytest.raises(ValueError, match="'level' is null at a decision bar"):
        history_episodes(features, 18, ("level",), market.head(5))
    with pytest.raises(ValueError, match="neither in the features nor in market"):
        history_episodes(features, 18, ("nothing",))


def test_bs_delta_pnl_is_the_premium_minus_the_payoff_plus_gains(features: pl.DataFrame) -> None:
    found = history_episodes(features, n_steps=18)
    problem = history_problem(18, cost=0.0)
    hold = torch.ones(len(found), 18)
    ep = found.episodes
    expected = ep.premium - ep.terminal_value + (ep.spot[:, -1] - ep.spot[:, 0])
    assert torch.allclose(pnl(problem, ep, hold), expected, atol=1e-4)


def test_take_keeps_every_field_aligned(features: pl.DataFrame) -> None:
    found = history_episodes(features, n_steps=18)
    picked = found.take(found.code == "SP500-2016-01-08")
    assert len(picked) == 9 and set(picked.code) == {"SP500-2016-01-08"}
    index = np.flatnonzero(found.code == "SP500-2016-01-08")
    assert torch.equal(picked.episodes.spot, found.episodes.spot[index])
    assert torch.equal(picked.mid, found.mid[index])
