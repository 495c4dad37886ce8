"""``hedge bench hedging``: E1 unchanged, Heston hedgers that see the vol, pfhedge beside ours."""

from __future__ import annotations

import sys

import pytest
import torch

from hedge_pipeline.bench.hedging import PFHEDGE_VERSION, pfhedge_hedgers, run, run_costs
from hedge_pipeline.hedging.baselines import BlackScholesDelta
from hedge_pipeline.hedging.simulator import (
    VOLATILITY,
    HedgingProblem,
    rollout,
    simulate_episodes,
)
from hedge_pipeline.quant.market_sim import HestonParams
from hedge_pipeline.quant.risk import parse_criterion

# pfhedge's HestonStock defaults (its README's Heston example), v0 = θ; its option's maturity.
HESTON = {"kappa": 1.0, "theta": 0.04, "xi": 0.2, "rho": -0.7, "v0": 0.04}
SMALL = {"epochs": 2, "paths": 256, "eval_paths": 2_000, "num_threads": 1}
PROBLEM = HedgingProblem(
    heston=HestonParams(**HESTON), n_steps=20, maturity=20 / 250, context=(VOLATILITY,)
)


def test_e1_baselines_are_the_committed_figures():
    """GBM hedgers observe no vol: the baselines on the 200,000 E1 evaluation paths are those of
    benchmarks/hedging.md to the digits printed there."""
    report = run(cost=1e-3, epochs=1, paths=64, eval_paths=200_000, num_threads=1)
    prices = {name: row["price"] for name, row in report["results"].items()}
    assert report["settings"]["observations"][-2:] == ["scaled_gamma", "prev_hedge"]
    assert prices["no_hedge"] == pytest.approx(0.028568, abs=5e-7)
    assert prices["bs_delta"] == pytest.approx(0.029872, abs=5e-7)
    assert prices["whalley_wilmott"] == pytest.approx(0.028472, abs=5e-7)


def test_heston_hedgers_see_the_vol_and_the_report_has_intervals():
    seen = run(market="heston", heston=HESTON, cost=1e-3, criterion="es:0.1", steps=20,
               maturity=20 / 250, **SMALL)  # fmt: skip
    blind = run(market="heston", heston=HESTON, cost=1e-3, criterion="es:0.1", steps=20,
                maturity=20 / 250, observe_vol=False, **SMALL)  # fmt: skip
    assert VOLATILITY in seen["settings"]["observations"]
    assert VOLATILITY not in blind["settings"]["observations"]
    # Same paths, different deltas: the current vol, not the constant sigma.
    assert seen["results"]["no_hedge"]["price"] == blind["results"]["no_hedge"]["price"]
    assert seen["results"]["bs_delta"]["price"] != blind["results"]["bs_delta"]["price"]
    (reference, rows), *_ = seen["intervals"].items()
    assert reference == "bs_delta" and set(rows) == {"no_hedge", "whalley_wilmott", "deep_hedging"}
    naked = rows["no_hedge"]
    assert naked["low"] <= naked["difference"] <= naked["high"] and naked["verdict"] == "worse"
    assert naked["clusters"] == 20  # 2,000 paths in blocks of 100


def test_run_costs_puts_each_cost_side_by_side():
    report = run_costs([0.0, 1e-3], market="heston", heston=HESTON, steps=20,
                       maturity=20 / 250, head="ntb,mlp", **SMALL)  # fmt: skip
    assert report["costs"] == [0.0, 1e-3]
    assert [r["settings"]["cost"] for r in report["runs"]] == [0.0, 1e-3]
    assert {"deep_hedging:ntb", "deep_hedging:mlp"} <= set(report["runs"][0]["results"])
    with pytest.raises(ValueError, match="at least one cost"):
        run_costs([])


def test_pfhedge_peer_needs_pfhedge(monkeypatch):
    monkeypatch.setitem(sys.modules, "pfhedge", None)
    episodes = simulate_episodes(PROBLEM, 8)
    with pytest.raises(RuntimeError, match=f"pip install pfhedge=={PFHEDGE_VERSION}"):
        pfhedge_hedgers(PROBLEM, parse_criterion("es:0.1"), episodes, epochs=1, paths=8, seed=0)


def test_pfhedge_prices_our_paths_with_our_pnl_convention():
    """pfhedge's own Black–Scholes hedger, fed our evaluation paths the way the peer rows are
    (spot and variance buffers), makes our BS delta's P&L: the same convention, costs and
    delta at the current vol, so the peer's rows are comparable with ours path by path."""
    pytest.importorskip("pfhedge")
    from pfhedge.instruments import EuropeanOption, HestonStock
    from pfhedge.nn import BlackScholes, Hedger

    problem = HedgingProblem(
        heston=PROBLEM.heston, n_steps=20, maturity=20 / 250, cost=1e-3, context=(VOLATILITY,)
    )
    episodes = simulate_episodes(problem, 4_000, torch.Generator().manual_seed(2))
    stock = HestonStock(kappa=1.0, theta=0.04, sigma=0.2, rho=-0.7, cost=1e-3)
    option = EuropeanOption(stock, maturity=20 / 250)
    stock.register_buffer("spot", episodes.spot)
    stock.register_buffer("variance", episodes.vol[..., 0].square())
    model = BlackScholes(option)
    with torch.no_grad():
        theirs = Hedger(model, model.inputs()).compute_pl(option)
    ours = rollout(problem, episodes, BlackScholesDelta())[0]
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-5)


def test_pfhedge_peer_rows_and_their_intervals():
    pytest.importorskip("pfhedge")
    report = run(market="heston", heston=HESTON, cost=1e-3, criterion="es:0.1", steps=20,
                 maturity=20 / 250, peer="pfhedge", peer_epochs=3, **SMALL)  # fmt: skip
    results = report["results"]
    assert {"pfhedge_mlp", "pfhedge_ntb"} <= set(results)
    # The peer's own budget; ours is --epochs.
    assert results["pfhedge_mlp"]["epochs"] == 3 and results["pfhedge_mlp"]["train_seconds"] > 0
    assert results["deep_hedging"]["epochs"] == 2 and report["settings"]["peer_epochs"] == 3
    assert set(report["intervals"]) == {"bs_delta", "pfhedge_mlp", "pfhedge_ntb"}
    against_ntb = report["intervals"]["pfhedge_ntb"]["deep_hedging"]
    assert against_ntb["baseline"] == pytest.approx(results["pfhedge_ntb"]["es10"])
    assert against_ntb["hedger"] == pytest.approx(results["deep_hedging"]["es10"])
    with pytest.raises(ValueError, match="no criterion matching"):
        run(market="heston", heston=HESTON, criterion="meanvar:1", peer="pfhedge", **SMALL)
