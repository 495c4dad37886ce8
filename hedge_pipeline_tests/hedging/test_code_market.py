"""One weekly code as a hedging market: replay from its quotes, simulation from its calibration."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from hedge_pipeline.hedging.baselines import NoHedge
from hedge_pipeline.hedging.calibration import calibrate
from hedge_pipeline.hedging.code_history import CodeHistory, CodeMarketError, code_history
from hedge_pipeline.hedging.code_market import CONTEXT, CodeMarket
from hedge_pipeline.hedging.evaluation import baselines, evaluate
from hedge_pipeline.hedging.simulator import Book, market_features, rollout
from hedge_pipeline.quant.risk import parse_criterion
from hedge_pipeline.stages.market_data.features import compute_features
from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource
from hedge_pipeline.stages.selection.book import select_portfolio
from hedge_pipeline.stages.selection.templates import load_template

CODE = "3CN5"
FORECAST = 0.2


@pytest.fixture(scope="module")
def inputs() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    raw = SyntheticSource(codes=(CODE,)).load(CODE).drop("source_file", "source_row")
    features = compute_features(raw)
    selection = select_portfolio(features, load_template("atm_book")).frame.filter(
        ~pl.col("is_hedge_instrument")
    )
    # A constant forecast from the 40th bar on: the market must use the latest one at or
    # before a start, and refuse starts before the first.
    bars = features["ts"].unique().sort()
    forecasts = pl.DataFrame({"ts": bars[40:], "prediction": FORECAST, "std": FORECAST / 10})
    return features, selection, forecasts


@pytest.fixture(scope="module")
def market(inputs) -> CodeMarket:
    return CodeMarket(code_history(*inputs), rebalance_bars=6, n_steps=6, cost=5e-4)


def test_history_follows_the_selection_and_its_split(inputs, market):
    selection = inputs[1]
    h = market.history
    assert h.symbols == tuple(sorted(selection["option_symbol"]))
    assert h.book.strikes == tuple(selection.sort("option_symbol")["strike"])
    bounds = selection.row(0, named=True)
    ts = pl.Series(h.ts).cast(pl.Datetime("us", "UTC"))
    for split in ("train", "val", "test"):
        inside = ts.filter(pl.Series(h.split == split))
        assert inside.min() >= bounds[f"{split}_start"]
        assert inside.max() <= bounds[f"{split}_end"]
    assert np.isfinite(h.iv).all() and np.isfinite(h.mid).all()
    assert np.isnan(h.rv_forecast[:40]).all() and (h.rv_forecast[40:] == FORECAST).all()


def test_replay_windows_lie_in_their_split_and_score_the_quoted_marks(market):
    h = market.history
    episodes = market.replay("test", dtype=torch.float64)
    starts = market.starts("test")
    assert episodes.spot.shape == (starts.size, market.n_steps + 1)
    windows = starts[:, None] + market.k * np.arange(market.n_steps + 1)
    assert (h.split[windows] == "test").all()
    weights = np.asarray(h.book.weights)
    np.testing.assert_allclose(episodes.premium.numpy(), h.mid[starts] @ weights)
    np.testing.assert_allclose(episodes.terminal_value.numpy(), h.mid[windows[:, -1]] @ weights)
    # Unhedged, the P&L of the short book is what it was sold for minus what it is worth.
    pl_, _ = rollout(market.problem, episodes, NoHedge())
    np.testing.assert_allclose(pl_.numpy(), (h.mid[starts] - h.mid[windows[:, -1]]) @ weights)


def test_replay_delta_is_the_book_delta_of_the_quoted_vols(inputs, market):
    features, _, _ = inputs
    episodes = market.replay("test", dtype=torch.float64)
    delta = market_features(market.problem, episodes)[:, 0, 2].numpy()
    symbols = list(market.history.symbols)
    starts = pl.DataFrame({"ts": market.history.ts[market.starts("test")], "delta": delta})
    # Bars where every book option has an ok quote (elsewhere the last vol is carried forward).
    quoted = (
        features.filter(pl.col("option_symbol").is_in(symbols), pl.col("iv_status") == "ok")
        .group_by("ts")
        .agg(pl.col("delta").sum().alias("quoted"), pl.len().alias("n"))
        .filter(pl.col("n") == len(symbols))
    )
    both = starts.with_columns(pl.col("ts").cast(quoted["ts"].dtype)).join(quoted, on="ts")
    assert both.height > 0.8 * starts.height
    # Black-76 in the data discounts at 4.5 % for days; the simulator is undiscounted.
    np.testing.assert_allclose(both["delta"], both["quoted"], rtol=2e-3, atol=1e-3)


def test_context_columns(market):
    episodes = market.replay("test", dtype=torch.float64)
    assert market.problem.context == CONTEXT
    sigma = market.calibration.sigma_ref
    context = episodes.context.numpy()
    np.testing.assert_allclose(context[..., 0], FORECAST / sigma)
    np.testing.assert_allclose(context[..., 1], FORECAST / 10 / sigma)
    h, starts = market.history, market.starts("test")
    i = starts[0]
    r = math.log(h.spot[i + market.k] / h.spot[i])
    dt = h.years[i + market.k] - h.years[i]
    expected = min(r * r / (market.calibration.heston.theta * dt), 25.0)
    assert context[0, 1, 2] == pytest.approx(expected, rel=1e-9)
    # Within a session 0 (longer across an outage); before a night 17.8 h / 30 min: log 3.6.
    gaps = context[..., 3]
    assert np.median(gaps) == pytest.approx(0.0, abs=1e-9) and gaps.min() > -1e-9
    assert gaps.max() == pytest.approx(math.log(17 * 60 + 50) - math.log(30), abs=0.05)


def test_simulation_is_seeded_starts_in_its_split_and_is_a_martingale(market):
    a = market.sample(20_000, torch.Generator().manual_seed(1), "train", torch.float64)
    b = market.sample(20_000, torch.Generator().manual_seed(1), "train", torch.float64)
    torch.testing.assert_close(a.spot, b.spot, rtol=0, atol=0)
    h = market.history
    starts = set(np.round(h.spot[market.starts("train")], 6))
    assert set(np.round(a.spot[:, 0].numpy(), 6)) <= starts
    log_growth = torch.log(a.spot[:, -1] / a.spot[:, 0])
    growth = (a.spot[:, -1] / a.spot[:, 0]).numpy()
    stderr = growth.std() / math.sqrt(growth.size)
    assert abs(growth.mean() - 1.0) < 4 * stderr
    assert float(log_growth.std()) > 0
    assert a.context.shape == (20_000, market.n_steps, len(CONTEXT))
    assert torch.isfinite(a.vol).all() and (a.vol > 0).all()


@pytest.mark.parametrize("any_expiry", [False, True])
def test_grouped_windows_share_their_start_state_and_nothing_after(market, any_expiry):
    group, n_states = 8, 50
    a = market.sample(
        group * n_states,
        torch.Generator().manual_seed(2),
        "train",
        torch.float64,
        any_expiry=any_expiry,
        group=group,
    )
    spot, tau = a.spot.reshape(n_states, group, -1), a.tau.reshape(n_states, group, -1)
    # One start state per group: start price (diffused over the shift), clock, forecasts.
    assert (spot[:, :, 0] == spot[:, :1, 0]).all() and (tau == tau[:, :1]).all()
    held = a.context[:, 0, :2].reshape(n_states, group, 2)
    assert (held == held[:, :1]).all()
    # Then independent paths: no two windows of a group move alike.
    assert (spot[:, :, 1:].std(dim=1) > 0).all()
    assert spot[:, 0, 0].unique().numel() > n_states // 2  # and the states differ
    if any_expiry:  # moved closer to expiry, as without groups
        unmoved = market.history.tau[market.windows(market.starts("train"))[:, 0]]
        assert (tau[:, 0, 0].numpy() < unmoved.max()).all()


def test_groups_of_one_draw_what_ungrouped_sampling_draws(market):
    for any_expiry in (False, True):
        a = market.sample(64, torch.Generator().manual_seed(3), any_expiry=any_expiry)
        b = market.sample(64, torch.Generator().manual_seed(3), any_expiry=any_expiry, group=1)
        torch.testing.assert_close(a.spot, b.spot, rtol=0, atol=0)
        torch.testing.assert_close(a.tau, b.tau, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"n_paths \(100\) must be a multiple of group \(64\)"):
        market.sample(100, group=64)


def test_simulated_replays_are_continuous_paths_cut_like_the_replay(market):
    replay = market.replay("test", dtype=torch.float64)
    starts, n_twins = market.starts("test"), 3
    twins = market.simulated_replays(
        n_twins, torch.Generator().manual_seed(4), "test", torch.float64
    )
    w = starts.size
    assert twins.spot.shape == (n_twins * w, market.n_steps + 1)
    # The replay's windows and clock, twin after twin.
    torch.testing.assert_close(twins.tau, replay.tau.repeat(n_twins, 1), rtol=0, atol=0)
    torch.testing.assert_close(twins.context[..., 3], replay.context[..., 3].repeat(n_twins, 1))
    spot = twins.spot.reshape(n_twins, w, -1)
    # One path per twin: a window starting one interval later starts where the first one
    # stood after its first interval (when both starts are in the split).
    later = np.searchsorted(starts, starts + market.k)
    both = (later < w) & (starts[np.minimum(later, w - 1)] == starts + market.k)
    assert both.sum() > w // 2
    torch.testing.assert_close(spot[:, later[both], 0], spot[:, np.flatnonzero(both), 1])
    # Twins are different paths from the same start state.
    assert (spot[0, :, -1] != spot[1, :, -1]).any()
    h = market.history
    first = starts[0] - market.k
    before = spot[:, 0, 0]
    assert before.std() > 0 and abs(float(before.mean()) / h.spot[first] - 1.0) < 0.05


def test_calibration_recovers_a_known_market():
    """GBM at 20 % vol on a 5-minute calendar grid, ATM implied vol 25 % throughout."""
    rng = np.random.default_rng(0)
    n, dt = 20_000, 5 / (365 * 24 * 60)
    spot = 100 * np.exp(np.cumsum(0.2 * math.sqrt(dt) * rng.standard_normal(n)))
    const = np.full(n, 0.25)
    history = CodeHistory(
        weekly_code="TEST",
        book=Book(),
        symbols=("TEST_C1",),
        ts=np.arange(n).astype("datetime64[m]"),
        years=np.arange(n) * dt,
        spot=spot,
        tau=0.2 - np.arange(n) * dt,
        iv=const[:, None],
        mid=const[:, None],
        atm_iv=const,
        iv_skew=np.full(n, -0.1),
        split=np.array(["train"] * n),
        rv_forecast=const,
        rv_forecast_std=const,
    )
    calibration = calibrate(history, rebalance_bars=6)
    assert calibration.realized_vol == pytest.approx(0.2, rel=0.02)
    assert calibration.implied_ratio == pytest.approx(0.0625 / 0.04, rel=0.04)
    assert calibration.sigma_ref == pytest.approx(0.25)
    assert calibration.skew == pytest.approx(-0.1)
    assert calibration.heston.xi == pytest.approx(1e-4)  # no variance moves: the floor


def test_a_horizon_past_expiry_is_refused_with_the_numbers(inputs):
    history = code_history(*inputs)
    with pytest.raises(CodeMarketError, match=r"60 steps x 6 bars \(360 bars\) runs past the "):
        CodeMarket(history, rebalance_bars=6, n_steps=60)


def test_a_selection_of_other_options_is_refused(inputs):
    features, selection, forecasts = inputs
    renamed = selection.with_columns(option_symbol=pl.lit("3CN5_C999"))
    with pytest.raises(CodeMarketError, match="no greeks_features rows for selected options"):
        code_history(features, renamed, forecasts)


def test_a_hedge_option_is_replayed_at_its_quotes_and_simulated_at_its_spread(inputs):
    features, _, forecasts = inputs
    selection = select_portfolio(features, load_template("delta_gamma_book")).frame
    market = CodeMarket(code_history(features, selection, forecasts), 6, 6, cost=5e-4)
    h, problem = market.history, market.problem
    hedge_row = selection.filter(pl.col("is_hedge_instrument")).row(0, named=True)
    assert h.instrument_symbol == hedge_row["option_symbol"]
    assert problem.instrument.strike == hedge_row["strike"] and problem.n_instruments == 2
    assert h.instrument_symbol not in h.symbols  # the book is short the others only
    replay = market.replay("test", dtype=torch.float64)
    windows = market.starts("test")[:, None] + market.k * np.arange(market.n_steps + 1)
    np.testing.assert_allclose(replay.instrument_price.numpy(), h.instrument_mid[windows])
    np.testing.assert_allclose(replay.instrument_cost.numpy(), h.instrument_half_spread[windows])
    simulated = market.sample(4096, torch.Generator().manual_seed(3), "test", torch.float64)
    relative = simulated.instrument_cost / simulated.instrument_price
    np.testing.assert_allclose(relative.numpy(), market.calibration.option_relative_half_spread)
    risk = parse_criterion("es:0.1")
    evaluation = evaluate(problem, replay, baselines(problem, risk), risk)
    assert set(evaluation.metrics) == {"no_hedge", "bs_delta", "whalley_wilmott", "bs_delta_gamma"}
    assert evaluation.hedges["bs_delta_gamma"].shape == (len(windows), market.n_steps, 2)
    # Neutral to gamma as well, the hedged book's P&L varies less than delta hedging's.
    metrics = evaluation.metrics
    assert metrics["bs_delta_gamma"]["std_pl"] < metrics["bs_delta"]["std_pl"]
