"""The epoch lines ``hedge run`` prints while a child trains: read from the Pipes messages the
launcher receives, with the stage, the loss, the best so far and at most how long is left."""

from __future__ import annotations

import io

from hedge_pipeline.harness.progress import (
    ConsoleProgress,
    epoch_summary,
    parse_epoch_summary,
    start_message,
)

ROW = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "lr": 1e-3, "grad_norm": 1.0,
       "train_val_ratio": 1.25, "seconds": 2.0, "samples_per_second": 500.0}  # fmt: skip


def _log(text: str, level: str = "INFO") -> dict:
    """A Pipes log message as ``open_dagster_pipes`` writes it."""
    return {"__dagster_pipes_version": "0.1", "method": "log",
            "params": {"message": text, "level": level}}  # fmt: skip


def test_each_epoch_is_one_line_with_the_best_and_at_most_the_time_left():
    """Time counts from the fit's start (the child's 30 s of start-up are not training); a
    second fit of the stage (the joint model's next phase) is numbered and starts afresh."""
    now = [100.0]
    out = io.StringIO()
    progress = ConsoleProgress("joint", stream=out, clock=lambda: now[0])
    for _ in range(2):
        now[0] += 30.0
        progress(_log(start_message("from scratch", "cpu", "fp32", 1, "ab12")))
        losses = (0.4, 0.3, 0.35)
        for epoch, loss in enumerate(losses, 1):
            now[0] += 10.0  # ten seconds an epoch
            best = loss == min(losses[:epoch])
            progress(_log(epoch_summary(ROW | {"epoch": epoch, "val_loss": loss}, 20, best)))
            progress(_log('{"epoch": 1, "val_loss": 0.4}', "DEBUG"))  # the JSON row
            progress({"method": "report_asset_materialization", "params": {}})
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "  joint: epoch 1/20 val_loss 0.4 (best 0.4 at 1); 10 s so far, at most 3 min 10 s left",
        "  joint: epoch 2/20 val_loss 0.3 (best 0.3 at 2); 20 s so far, at most 3 min 0 s left",
        "  joint: epoch 3/20 val_loss 0.35 (best 0.3 at 2); 30 s so far, at most 2 min 50 s left",
    ]
    assert lines[3:] == [line.replace("joint:", "joint [fit 2]:") for line in lines[:3]]


def test_the_summary_format_and_its_parser_agree():
    for best in (True, False):
        for loss in (0.25, -0.0005613, 1.5e-7, float("inf")):
            line = parse_epoch_summary(epoch_summary(ROW | {"val_loss": loss}, 7, best))
            assert line is not None and tuple(line) == (1, 7, float(f"{loss:.4g}"), best)
