"""The ensemble's report: verdict first, every hedger against the strongest baseline."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import torch

from hedge_pipeline.hedging.comparison import strongest_baseline
from hedge_pipeline.quant.risk import parse_criterion
from hedge_pipeline.stages.portfolio_models import report
from hedge_pipeline.stages.portfolio_models.evaluation import portfolio_metrics


def _split(seed: int, n: int = 600) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, generator=g, dtype=torch.float64)
    pnls = {
        "no_hedge": 4.0 * base,
        "bs_delta": base,
        "whalley_wilmott": 1.1 * base,
        "specialists": 0.9 * base,
        "meta_controller": 0.8 * base,
        "joint": 0.8 * base,  # a stage that adds nothing
        "ensemble": 0.7 * base,
    }
    risk = parse_criterion("es:0.1")
    tables = {
        name: portfolio_metrics(pl[:, None].repeat(1, 2), pl, torch.zeros(n), risk, 9.0, base)
        for name, pl in pnls.items()
    }
    return tables, pnls


def test_the_report_puts_the_verdict_first_and_every_hedger_against_the_strongest_baseline(
    tmp_path: Path,
):
    tables, pnls, blocks = {}, {}, {}
    for seed, split in enumerate(("test_replay", "test_simulated")):
        tables[split], pnls[split] = _split(seed)
        blocks[split] = torch.arange(600) // 6  # 100 blocks of 6 overlapping windows
    comparisons = report.compare(tables, pnls, blocks)
    replay = comparisons["test_replay"]
    assert replay.baseline == "bs_delta"  # the lowest ES10 of the three baselines
    assert replay.of_model.difference < 0 and replay.of_model.verdict == "better"
    assert replay.rows["no_hedge"].verdict == "worse"
    assert replay.of_model.windows == 600 and replay.of_model.clusters == 100
    assert abs(replay.of_model.relative - (-0.3)) < 1e-12

    tails = {s: {"ensemble": {"3CN5": {"windows": 60, "mean_loss": 1.0,
                                        "es10_contribution": 1.0}}} for s in tables}  # fmt: skip
    labels = {
        split: pl.DataFrame({"front_code": ["3CN5"] * 600, "block": blocks[split].numpy()})
        for split in tables
    }
    stages = {
        split: report.stage_differences(pnls[split], blocks[split], comparisons[split].baseline)
        for split in tables
    }
    replay_stages = stages["test_replay"]
    assert list(replay_stages) == ["specialists", "meta_controller", "joint", "ensemble"]
    assert replay_stages["meta_controller"]["previous"].verdict == "better"
    assert replay_stages["joint"]["previous"].difference == 0.0
    assert replay_stages["joint"]["previous"].verdict == "undecided"
    assert replay_stages["joint"]["baseline"].verdict == "better"
    assert replay_stages["ensemble"]["previous"].baseline == tables["test_replay"]["joint"]["es10"]
    written = report.write(
        tmp_path,
        ("candidate", "why"),
        comparisons,
        tables,
        tails,
        pnls,
        labels,
        {"codes": ["3CN5"]},
        stages,
    )
    for split in tables:  # every window's P&L, for pooling and re-testing
        frame = pl.read_parquet(tmp_path / f"pnl_{split}.parquet")
        assert frame.columns == ["front_code", "block", *pnls[split]]
        assert frame["block"].to_list() == blocks[split].tolist()
        for name, pnl in pnls[split].items():
            assert frame[name].to_list() == pnl.double().tolist()
    markdown = (tmp_path / "report.md").read_text()
    lines = markdown.splitlines()
    assert lines[0] == "# hedge-ensemble evaluation" and lines[2] == "**candidate**: why"
    assert "Lower ES10 is better" in lines[4] and "price units" in lines[4]
    assert "## Test replay: against bs_delta" in markdown
    assert replay.headline in markdown
    assert "| **ensemble** |" in markdown and "| hedger | ES10 ↓ | Δ vs bs_delta |" in markdown
    assert markdown.rstrip().endswith(report.definitions_table())
    assert "### Stage by stage, test replay" in markdown
    assert "| joint | meta_controller |" in markdown
    assert "contribution to ES10" in markdown and "share of ES10" not in markdown
    for split in tables:
        for kind in ("left_tail", "paired"):
            assert (tmp_path / f"{kind}_{split}.png").read_bytes()[:4] == b"\x89PNG"
            assert f"({kind}_{split}.png)" in markdown
    document = json.loads((tmp_path / "report.json").read_text())
    assert document["codes"] == ["3CN5"]
    assert document["comparisons"]["test_replay"]["ensemble"]["verdict"] == "better"
    assert document["stages"]["test_replay"]["ensemble"]["previous"]["verdict"] == "better"
    assert set(written.metadata) >= {
        "evaluation_test_replay", "all_metrics_test_replay", "tail_by_front_test_replay",
        "left_tail_test_replay", "paired_test_replay", "definitions", "stages_test_replay",
    }  # fmt: skip
    assert all(entry["type"] == "md" for entry in written.metadata.values())


def test_with_hedge_options_the_delta_gamma_baseline_competes():
    tables, _ = _split(3)
    tables["bs_delta_gamma"] = dict(tables["bs_delta"], es10=tables["bs_delta"]["es10"] / 2)
    assert strongest_baseline(tables) == "bs_delta_gamma"
    # The trained models are never a baseline, however low their ES10.
    assert strongest_baseline({**tables, "ensemble": {"es10": -1.0}}) == "bs_delta_gamma"
