"""The portfolio's market: each ensemble member's bootstrap of the training windows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.hedging.code_history import code_history
from hedge_pipeline.hedging.code_market import CodeMarket
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.stages.portfolio_models import stage as shared
from hedge_pipeline.stages.portfolio_models.market import PortfolioMarket, PortfolioWindows
from hedge_pipeline.stages.portfolio_models.train_joint import member_portfolio
from hedge_pipeline.stages.selection.book import select_portfolio
from hedge_pipeline.stages.selection.templates import load_template

CODES = ("3CN5", "3IN5", "3MN5")


@pytest.fixture(scope="module")
def market() -> PortfolioMarket:
    """Three consecutive synthetic weekly codes of one underlying, as the portfolio stages
    build them (``stage.load_portfolio``), with a constant CNN-LSTM forecast."""
    source = SyntheticSource(codes=CODES)
    markets = []
    for code in CODES:
        features = compute_features(source.load(code).drop("source_file", "source_row"))
        selection = select_portfolio(features, load_template("atm_book")).frame.filter(
            ~pl.col("is_hedge_instrument")
        )
        forecasts = pl.DataFrame({"ts": features["ts"].unique().sort(), "prediction": 0.2})
        forecasts = forecasts.with_columns(std=pl.lit(0.02))
        history = code_history(features, selection, forecasts)
        markets.append(CodeMarket(history, rebalance_bars=6, n_steps=6, cost=5e-4))
    return PortfolioMarket(markets)


def _rows(windows: PortfolioWindows) -> list[tuple[int, ...]]:
    """Each window as (front, start of every code), in a canonical order."""
    return sorted(map(tuple, np.column_stack([windows.front, windows.local]).tolist()))


def test_members_train_on_different_bootstraps_each_fixed_by_its_seed(market) -> None:
    train = market.windows("train")
    first, again, second = (market.bootstrapped(s).windows("train") for s in (1, 1, 2))
    assert _rows(first) == _rows(again)  # deterministic per seed
    assert _rows(first) != _rows(second)  # and another seed draws other windows
    originals = set(_rows(train))
    for drawn in (first, second):
        assert set(_rows(drawn)) <= originals  # only training windows, some twice
        assert set(_rows(drawn)) != originals
        assert len(set(_rows(drawn))) < len(drawn)


def test_a_bootstrap_draws_whole_blocks_of_overlapping_windows(market) -> None:
    """A drawn block brings every window of it, as often as it was drawn: a member never
    keeps one window of two that share most of their bars and drops the other."""
    train = market.windows("train")
    drawn = market.bootstrapped(3).windows("train")
    span = market.n_steps * market.k

    def counts(w: PortfolioWindows) -> dict[tuple[int, int], int]:
        start = w.local[np.arange(len(w)), w.front]
        keys, n = np.unique(np.column_stack([w.front, start // span]), axis=0, return_counts=True)
        return dict(zip(map(tuple, keys.tolist()), n.tolist(), strict=True))

    full = counts(train)
    for block, n in counts(drawn).items():
        assert n % full[block] == 0


def test_a_bootstrap_leaves_validation_test_and_the_market_it_came_from_alone(market) -> None:
    before = _rows(market.windows("train"))
    resampled = market.bootstrapped(1)
    for split in ("val", "test"):
        assert _rows(resampled.windows(split)) == _rows(market.windows(split))
    assert _rows(market.windows("train")) == before


def test_each_member_trains_on_its_own_seed_s_bootstrap(market) -> None:
    portfolio = shared.Portfolio(market, None, [], {}, [])  # type: ignore[arg-type]
    zero, one = (member_portfolio(portfolio, seed).market for seed in (0, 1))
    assert _rows(zero.windows("train")) != _rows(one.windows("train"))
    expected = market.bootstrapped(shared.BOOTSTRAP_SEED + 1).windows("train")
    assert _rows(one.windows("train")) == _rows(expected)
    assert portfolio.market is market  # the members' copies leave the stage's portfolio alone
