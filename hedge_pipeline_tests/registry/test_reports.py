"""Fetching an ensemble version's evaluation report from a real MLflow registry."""

from __future__ import annotations

import pytest

from hedge_pipeline.registry import reports
from hedge_pipeline.registry.versions import CHAMPION, UnknownModelVersionError
from hedge_pipeline.runtime import paths
from hedge_pipeline_tests.registry_builder import ENSEMBLE, REPORT_MD, register

REPORT = {"report.md": REPORT_MD, "report.json": '{"es10": 0.1}', "plots/pnl.png": b"\x89PNG"}


def test_the_table_under_the_evaluation_heading_is_the_evaluation_table():
    table = reports.evaluation_table(REPORT_MD)
    assert table.splitlines() == [
        "## Evaluation (test windows, replay)",
        "",
        "| hedger | es10 | mean_pnl |",
        "|---|---:|---:|",
        "| ensemble | 0.112 | -0.010 |",
        "| bs_delta | 0.153 | -0.012 |",
    ]


def test_without_an_evaluation_heading_the_first_table_is_taken():
    markdown = "# Report\n\n| a | b |\n| :--- | ---: |\n| 1 | 2 |\ntext\n\n| c |\n|---|\n| 3 |\n"
    assert reports.evaluation_table(markdown) == "| a | b |\n| :--- | ---: |\n| 1 | 2 |"
    assert reports.evaluation_table("# Evaluation\n\nno numbers yet | really\n") is None


def test_fetch_copies_the_report_of_exactly_that_version(mlflow_client, tmp_path):
    register(mlflow_client, tmp_path, ENSEMBLE, report={"report.md": "old", "old.png": b"x"})
    version = register(mlflow_client, tmp_path, ENSEMBLE, report=REPORT)
    target = paths.reports_dir() / f"{ENSEMBLE}-v2"
    target.mkdir(parents=True)
    (target / "stale.png").write_bytes(b"from an earlier copy")

    fetched = reports.fetch(mlflow_client, version)

    assert (fetched.name, fetched.version, fetched.directory) == (ENSEMBLE, 2, target)
    assert [p.relative_to(target).as_posix() for p in fetched.files] == [
        "plots/pnl.png",
        "report.json",
        "report.md",
    ]
    assert fetched.markdown == REPORT_MD
    assert (target / "plots" / "pnl.png").read_bytes() == b"\x89PNG"
    assert not any(p.name.startswith(".download-") for p in target.parent.iterdir())


def test_a_version_without_report_is_refused_by_name(mlflow_client, tmp_path):
    version = register(mlflow_client, tmp_path, ENSEMBLE, report={"notes.txt": "no report"})
    with pytest.raises(reports.MissingReportError) as caught:
        reports.fetch(mlflow_client, version)
    message = str(caught.value)
    assert f"{ENSEMBLE} v1: its source run {version.run_id} has no report/report.md" in message
    assert "report/notes.txt" in message
    assert not paths.reports_dir().joinpath(f"{ENSEMBLE}-v1").exists()


def test_default_is_the_champion_else_the_latest_with_a_note(mlflow_client, tmp_path):
    with pytest.raises(UnknownModelVersionError, match=f"no registered model '{ENSEMBLE}'"):
        reports.default_version(mlflow_client)
    register(mlflow_client, tmp_path, ENSEMBLE)
    register(mlflow_client, tmp_path, ENSEMBLE)
    version, note = reports.default_version(mlflow_client)
    assert version.version == 2
    assert note == f"{ENSEMBLE} has no champion yet; using its latest version, v2"
    mlflow_client.set_registered_model_alias(ENSEMBLE, CHAMPION, 1)
    version, note = reports.default_version(mlflow_client)
    assert (version.version, note) == (1, None)
