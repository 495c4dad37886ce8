"""``hedge backfill`` refusals that need no server (the live backfill is in e2e/)."""

from __future__ import annotations

from hedge_pipeline.cli import main as cli
from hedge_pipeline_tests.e2e.dagster_ui import free_port


def test_no_webserver_is_a_clear_refusal(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["backfill", "--codes", "3CN5", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"no Dagster webserver at {url}" in err
    assert "hedge ui" in err


def test_empty_codes_are_refused_before_any_request(capsys):
    assert cli.main(["backfill", "--codes", " , ", "--url", "http://127.0.0.1:9"]) == 2
    assert "at least one code" in capsys.readouterr().err
