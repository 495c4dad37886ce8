"""``harness.session``: a standalone child's final failure (the Pipes path is exercised by
``orchestration/test_launcher.py`` with a real child and a real Dagster run)."""

from __future__ import annotations

import json
from pathlib import Path

from hedge_pipeline.harness.session import TrainingSession


def test_a_standalone_child_writes_its_final_failure_where_its_extras_say(tmp_path: Path):
    failure = tmp_path / "failure.json"
    TrainingSession({"failure_file": str(failure)}, None, rank=0).fail_for_good("bad config")
    assert json.loads(failure.read_text(encoding="utf-8")) == {"message": "bad config"}


def test_only_rank_0_reports_and_no_failure_file_means_none_written(tmp_path: Path):
    failure = tmp_path / "failure.json"
    TrainingSession({"failure_file": str(failure)}, None, rank=1).fail_for_good("bad config")
    TrainingSession({}, None, rank=0).fail_for_good("bad config")
    assert list(tmp_path.iterdir()) == []
