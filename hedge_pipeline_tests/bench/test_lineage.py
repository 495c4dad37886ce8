"""``hedge bench lineage``: each period's comparisons from the ensemble's per-window P&L table,
their pool and their tables. (The runs themselves are ``hedge run``'s, tested with it; the
bench's own figures are in ``benchmarks/lineage_walkforward.md``.)"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hedge_pipeline.bench.lineage import PREDECESSORS, _period, markdown
from hedge_pipeline.bench.walkforward import paired_gains, pool

HEDGERS = ("no_hedge", "bs_delta", "whalley_wilmott", "meta_controller", "joint", "ensemble")


def _frame(seed: int, windows: int = 60) -> pl.DataFrame:
    """A period's ``pnl_test_replay.parquet``: BS delta loses 2 points in its worst windows,
    the ensemble 1 point less there, everything else equal."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, windows)
    columns = {name: base.copy() for name in HEDGERS}
    columns["no_hedge"] = base * 5.0
    worst = np.argsort(base)[: windows // 10]
    columns["bs_delta"][worst] -= 2.0
    columns["whalley_wilmott"][worst] -= 2.0
    columns["meta_controller"][worst] -= 2.0
    columns["joint"][worst] -= 2.0
    columns["ensemble"][worst] -= 1.0
    codes = ["SP500-2008-10-24", "SP500-2008-10-31", "SP500-2008-11-07"]
    return pl.DataFrame(
        {
            "front_code": [codes[i * 3 // windows] for i in range(windows)],
            "block": np.arange(windows) // 2,
            **columns,
            "bs_delta_without_costs": columns["bs_delta"] + 0.1,
        }
    )


def test_a_period_scales_to_percent_of_spot_and_leaves_readings_out():
    frame = _frame(0)
    period = _period("2008-10-15", frame, spot=200.0, seed=0, offset=1_000)
    assert set(period["vs_bs_delta"]) == set(HEDGERS)  # not bs_delta_without_costs
    assert period["_pnl"]["bs_delta"].tolist() == pytest.approx(
        (frame["bs_delta"].to_numpy() / 2.0).tolist()
    )
    assert period["_blocks"].tolist() == (frame["block"].to_numpy() + 1_000).tolist()
    assert period["test"] == {
        "codes": ["SP500-2008-10-24", "SP500-2008-10-31", "SP500-2008-11-07"],
        "episodes": 60,
        "blocks": 30,
        "first_expiry": "2008-10-24",
        "last_expiry": "2008-11-07",
    }
    ensemble = period["vs_bs_delta"]["ensemble"]
    assert ensemble["difference"] == pytest.approx(-1.0 / 2.0)  # 1 point of 200: 0.5 %
    assert period["strongest_baseline"] in ("bs_delta", "whalley_wilmott")


def test_periods_pool_without_sharing_blocks_and_print_as_windows():
    periods = [
        _period(f"20{y}-06-30", _frame(y), spot=100.0, seed=0, offset=1_000_000 * i)
        for i, y in enumerate((8, 11, 15))
    ]
    pnls = [p.pop("_pnl") for p in periods]
    blocks = [p.pop("_blocks") for p in periods]
    pooled = pool(pnls, blocks, "ensemble", seed=0)
    ensemble = pooled["vs_bs_delta"]["ensemble"]
    assert ensemble["windows"] == 180 and ensemble["clusters"] == 90
    assert ensemble["verdict"] == "better" and ensemble["high"] < 0
    # Each stage against what it builds on, where both are in the table: the joint model
    # equals the meta-controller here, the ensemble loses a point less in the worst windows.
    stages = paired_gains(pnls, blocks, PREDECESSORS.items(), seed=0)
    gains = {d["hedger_name"]: d for d in stages}
    assert set(gains) == {"joint", "ensemble"}
    assert (gains["joint"]["builds_on"], gains["joint"]["difference"]) == ("meta_controller", 0.0)
    assert gains["joint"]["verdict"] == "undecided"
    assert gains["ensemble"]["builds_on"] == "joint" and gains["ensemble"]["verdict"] == "better"
    text = markdown({"periods": periods, "pooled": pooled, "stages": stages})
    assert "| stage | builds on | its ES10 | ES10 before | Δ | 95 % interval | verdict |" in text
    assert "| ensemble | joint |" in text
    assert "| as_of | test expiries | windows | blocks | bs_delta ES10 |" in text
    assert "| 2011-06-30 | 2008-10-24 to 2008-11-07 | 60 | 30 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2015-06-30 | ensemble |"))
    d = periods[2]["vs_bs_delta"]["ensemble"]
    assert f"| {d['difference']:+.3f} | {d['low']:+.3f} to {d['high']:+.3f} |" in row
