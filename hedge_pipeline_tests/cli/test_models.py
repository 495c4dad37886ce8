"""``hedge models list|show`` and ``hedge evaluate`` on a real MLflow registry.

Called through ``cli.main`` in-process (the registry is the test's own data directory), and
once as a separate process, as users run it, for the exit status and stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from hedge_pipeline.cli import main as cli
from hedge_pipeline.runtime import paths
from hedge_pipeline_tests.registry_builder import (
    CNN_LSTM,
    CODES,
    ENSEMBLE,
    JOINT,
    META,
    SyntheticLineage,
    build_lineage,
    data_version,
    register,
    specialist,
)


@pytest.fixture
def built(mlflow_client: MlflowClient, tmp_path: Path) -> SyntheticLineage:
    return build_lineage(mlflow_client, tmp_path / "work")


def hedge(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def columns(line: str) -> list[str]:
    return line.split()


def test_models_list_aligns_one_row_per_registered_model(capsys, built):
    code, out, _ = hedge(capsys, "models", "list")
    assert code == 0
    lines = out.splitlines()
    assert columns(lines[0]) == ["name", "latest", "versions", "aliases"]
    rows = {columns(line)[0]: columns(line)[1:] for line in lines[1:]}
    assert rows[ENSEMBLE] == ["2", "2", "candidate=v2,", "champion=v2"]
    assert rows[specialist(CODES[0])] == ["2", "2", "candidate=v2"]
    assert rows[JOINT] == ["3", "3", "candidate=v3"]
    assert len(rows) == 4 + len(CODES)
    # Aligned: every row's second column ends where the header's does.
    end = lines[0].index("latest") + len("latest")
    assert all(line[end - 1] != " " and line[end] == " " for line in lines[1:])


def test_models_list_json(capsys, built):
    code, out, _ = hedge(capsys, "models", "list", "--json")
    assert code == 0
    models = {m["name"]: m for m in json.loads(out)}
    assert models[ENSEMBLE] == {
        "name": ENSEMBLE,
        "latest_version": 2,
        "versions": 2,
        "aliases": {"candidate": 2, "champion": 2},
    }
    assert models[CNN_LSTM]["versions"] == 2


def test_models_list_on_an_empty_registry_says_how_to_fill_it(capsys, mlflow_client):
    code, out, _ = hedge(capsys, "models", "list")
    assert (code, out.strip()) == (
        0,
        f"no registered models in {mlflow_client.tracking_uri}; train some with: hedge run",
    )


def test_models_show_name_all_lists_versions_newest_first_with_test_metrics(capsys, built):
    code, out, _ = hedge(capsys, "models", "show", ENSEMBLE, "--all")
    assert code == 0
    assert out.startswith(f"{ENSEMBLE}: 2 version(s); aliases: candidate=v2, champion=v2\n")
    versions, metrics = out.split("\n\n")[1:3]
    rows = versions.splitlines()
    assert columns(rows[0]) == ["version", "aliases", "status", "created", "run_id"]
    assert columns(rows[1])[:4] == ["2", "candidate,", "champion", "READY"]
    assert columns(rows[1])[-1] == built.ensemble.run_id
    assert columns(rows[2])[:2] == ["1", "READY"]
    assert metrics.splitlines()[1:] == [
        "metric            v2  v1",
        "test_es10      0.112   -",
        "test_mean_pnl  -0.01   -",
    ]

    code, out, _ = hedge(capsys, "models", "show", ENSEMBLE, "--json")
    doc = json.loads(out)
    assert [v["version"] for v in doc["versions"]] == [2, 1]
    assert doc["versions"][0]["aliases"] == ["candidate", "champion"]
    assert doc["versions"][0]["metrics"] == {"test_es10": 0.112, "test_mean_pnl": -0.01}
    assert doc["versions"][0]["status"] == "READY"


def test_models_show_version_all_prints_tags_metrics_upstream_and_the_lineage_tree(capsys, built):
    code, out, _ = hedge(capsys, "models", "show", f"{ENSEMBLE}@champion", "--all")
    assert code == 0
    head, *sections = out.split("\n\n")
    assert head.startswith(f"{ENSEMBLE} v2  [candidate, champion]  READY  created ")
    by_title = {s.splitlines()[0]: s.splitlines()[1:] for s in sections}
    tags = dict(columns(line) for line in by_title["tags"][1:])
    assert tags["data_version"] == built.ensemble.tags["data_version"]
    assert "upstream.hedge-joint/0" not in tags  # listed under upstream instead
    assert [columns(line) for line in by_title["metrics (source run)"][1:]] == [
        ["test_es10", "0.112"],
        ["test_mean_pnl", "-0.01"],
        ["val_es10", "0.1"],
    ]
    assert [columns(line) for line in by_title["upstream"][1:]] == [
        [f"upstream.{JOINT}/0", JOINT, "v2"],
        [f"upstream.{JOINT}/1", JOINT, "v3"],
    ]
    assert [columns(line)[:2] for line in by_title["weekly codes"][1:]] == [
        [c, data_version(c)] for c in CODES
    ]
    tree = by_title["lineage"]
    assert tree[0].startswith(f"{ENSEMBLE} v2  [candidate, champion]")
    assert tree[1].startswith(f"├── {JOINT} v2") and tree[9].startswith(f"└── {JOINT} v3")
    assert tree[2].startswith(f"│   └── {META} v1")
    assert tree[3].startswith(f"│       ├── {specialist(CODES[0])} v1  weekly_code={CODES[0]}")
    assert tree[4].startswith(f"│       │   └── {CNN_LSTM} v2")


def test_models_show_version_json_carries_the_whole_lineage(capsys, built):
    code, out, _ = hedge(capsys, "models", "show", f"{JOINT}:{built.joints[1].version}", "--json")
    assert code == 0
    doc = json.loads(out)
    assert (doc["name"], doc["version"], doc["broken_links"]) == (JOINT, 3, [])
    assert doc["metrics"] == {"test_es10": 0.13}
    assert doc["upstream"] == [
        {"tag": f"upstream.{META}", "name": META, "version": "1", "error": None}
    ]
    specialists = doc["lineage"]["upstream"][0]["upstream"]
    assert [(s["name"], s["version"], s["tags"]["weekly_code"]) for s in specialists] == [
        (specialist(c), 1, c) for c in CODES
    ]
    assert {s["upstream"][0]["version"] for s in specialists} == {2}
    assert [p["weekly_code"] for p in doc["partitions"]] == list(CODES)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "show", "hedge-nope"], "hedge: error: no registered model 'hedge-nope'"),
        (
            ["models", "show", f"{JOINT}:9"],
            f"{JOINT} has no version or alias '9'; versions: 1, 2, 3",
        ),
        (["models", "show", f"{JOINT}@champion"], "aliases: candidate=v3"),
        (["models", "show", f"{JOINT}:v2"], "expected NAME, NAME@alias or NAME:version"),
        (["evaluate", "hedge-nope:1"], "hedge: error: no registered model 'hedge-nope'"),
    ],
)
def test_unknown_models_and_versions_exit_2_with_the_reason_on_stderr(capsys, built, argv, message):
    code, out, err = hedge(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert err.startswith("hedge: error: ") and err.count("\n") == 1


def test_a_broken_lineage_is_printed_then_reported_with_exit_1(
    capsys, mlflow_client, built, tmp_path
):
    broken = register(mlflow_client, tmp_path, JOINT, {f"upstream.{META}": "7"})
    code, out, err = hedge(capsys, "models", "show", f"{JOINT}:{broken.version}")
    assert code == 1
    assert f"parents       BROKEN upstream.{META}=7\n" in out
    code, out, err = hedge(capsys, "models", "show", f"{JOINT}:{broken.version}", "--all")
    assert code == 1
    assert f"└── BROKEN upstream.{META}=7: {META} has no version or alias '7'" in out
    assert err.startswith(
        f"hedge models show: broken lineage: {JOINT} v4: tag upstream.{META}=7: "
        f"{META} has no version or alias '7'; versions: 1"
    )
    code, out, _ = hedge(capsys, "models", "show", f"{JOINT}:{broken.version}", "--json")
    assert code == 1 and len(json.loads(out)["broken_links"]) == 1


def test_evaluate_writes_the_champions_report_and_prints_its_table(capsys, built):
    code, out, err = hedge(capsys, "evaluate")
    assert code == 0 and "note:" not in err
    target = paths.reports_dir() / f"{ENSEMBLE}-v2"
    files = [target / "plots" / "pnl.png", target / "report.json", target / "report.md"]
    assert all(f.is_file() for f in files)
    assert out.splitlines()[0] == (
        f"{ENSEMBLE} v2 [candidate, champion], source run {built.ensemble.run_id}"
    )
    assert "## Evaluation (test windows, replay)" in out
    assert "| ensemble | 0.112 | -0.010 |" in out
    assert "| joint | weight |" not in out  # only the evaluation table
    assert out.rstrip().endswith("\n".join([f"written to {target}:", *(f"  {f}" for f in files)]))


def test_evaluate_without_a_champion_takes_the_latest_and_says_so(capsys, mlflow_client, tmp_path):
    report = {"report.md": "# Evaluation\n\n| hedger | es10 |\n|---|---:|\n| ensemble | 0.2 |\n"}
    register(mlflow_client, tmp_path, ENSEMBLE, report=report)
    code, out, err = hedge(capsys, "evaluate")
    assert code == 0
    assert err.strip() == f"note: {ENSEMBLE} has no champion yet; using its latest version, v1"
    assert "| ensemble | 0.2 |" in out
    assert (paths.reports_dir() / f"{ENSEMBLE}-v1" / "report.md").is_file()


def test_evaluate_a_version_without_report_exits_2(capsys, built):
    code, out, err = hedge(capsys, "evaluate", f"{CNN_LSTM}:2")
    assert (code, out) == (2, "")
    assert f"hedge: error: {CNN_LSTM} v2: its source run" in err and "report/report.md" in err
    assert not paths.reports_dir().joinpath(f"{CNN_LSTM}-v2").exists()


def test_the_console_command_exits_2_on_an_unknown_model(mlflow_client, data_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "hedge_pipeline.cli.main", "models", "show", "hedge-nope@champion"],
        env={**os.environ, **paths.instance_env(data_dir)},
        cwd=paths.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "hedge: error: no registered model 'hedge-nope'; registered models: none "
        "(train one first)\n"
    )


# The names the ensemble stage logs (``<split>_<hedger>_<measure>``), a few of its hundreds.
ENSEMBLE_METRICS = {
    **{
        f"{split}_{hedger}_{measure}": value + offset
        for split, offset in (("test_replay", 0.0), ("test_simulated", 1.0))
        for hedger, value in (
            ("ensemble", 2.671),
            ("bs_delta", 2.614),
            ("whalley_wilmott", 2.9),
            ("no_hedge", 9.5),
            ("bs_delta_without_costs", 2.2),  # free trading: a reference, not a baseline
        )
        for measure in ("es10", "price")
    },
    **{f"test_replay_ensemble_{m}": 0.5 for m in ("sharpe", "sortino", "calmar", "win_rate")},
}


def _candidate_ensemble(
    client: MlflowClient, workdir: Path, joints: tuple[int, ...] = (2, 3)
) -> ModelVersion:
    """An ensemble the promotion gate refused, tagged and logged as the stage does, on the
    joint model versions ``joints`` (those of ``build_lineage`` by default)."""
    version = register(
        client,
        workdir,
        ENSEMBLE,
        {
            "dagster_asset": "hedge_ensemble",
            **{f"upstream.{JOINT}/{k}": str(v) for k, v in enumerate(joints)},
            "config_hash": "5174d1fc10a41c50",
            "promotion": "candidate",
            "promotion_reason": "test ES10 (replay) 2.671 does not beat BS delta's 2.614 by 1.0%",
        },
        metrics=ENSEMBLE_METRICS,
    )
    client.log_param(version.run_id, "criterion", "es:0.1")
    return version


def test_models_show_version_is_a_screenful_of_headline_metrics(
    capsys, mlflow_client, built, tmp_path
):
    version = _candidate_ensemble(mlflow_client, tmp_path)
    code, out, _ = hedge(capsys, "models", "show", f"{ENSEMBLE}@latest")
    assert code == 0
    head, metrics, codes, hint = out.rstrip("\n").split("\n\n")
    title, *lines = head.splitlines()
    assert title.startswith(f"{ENSEMBLE} v{version.version}  [candidate]  created ")
    facts = dict(line.split(None, 1) for line in lines)
    assert facts["stage"] == "hedge_ensemble"
    assert facts["status"] == (
        "candidate: test ES10 (replay) 2.671 does not beat BS delta's 2.614 by 1.0%"
    )
    assert (facts["criterion"], facts["config_hash"]) == ("es:0.1", "5174d1fc10a41c50")
    assert facts["parents"] == f"{JOINT} v2, v3"
    # The model against the strongest baseline (BS delta here; never the free-trading
    # reference, which no one can trade), on each test split; nothing else.
    title, _, *rows = metrics.splitlines()
    assert "lower is better" in title
    assert [row.strip().split("  ")[0] for row in rows] == [
        "test, replay: ES10, ensemble",
        "test, replay: ES10, strongest baseline",
        "test, replay: ensemble vs bs_delta",
        "test, simulated: ES10, ensemble",
        "test, simulated: ES10, strongest baseline",
        "test, simulated: ensemble vs bs_delta",
    ]
    assert rows[1].split()[-2:] == ["2.614", "(bs_delta)"]
    assert rows[2].split()[-1] == "+2.2%"
    assert "sharpe" not in out and "whalley_wilmott" not in out
    assert codes.splitlines()[0] == "weekly codes"
    assert hint == (
        f"the lineage tree, {len(version.tags)} tags and {len(ENSEMBLE_METRICS)} metrics: "
        f"hedge models show {ENSEMBLE}@latest --all"
    )
    assert len(out.splitlines()) < 40
    code, out, _ = hedge(capsys, "models", "show", f"{ENSEMBLE}@latest", "--all")
    assert code == 0 and "test_replay_ensemble_sharpe" in out and "lineage\n" in out


def test_models_show_name_is_one_row_per_version_and_their_headlines(
    capsys, mlflow_client, built, tmp_path
):
    _candidate_ensemble(mlflow_client, tmp_path)
    code, out, _ = hedge(capsys, "models", "show", ENSEMBLE)
    assert code == 0
    head, versions, metrics, promotion, hint = out.rstrip("\n").split("\n\n")
    assert head == (
        f"{ENSEMBLE}: 3 version(s); aliases: candidate=v3, champion=v2; stage: ensemble, "
        "hedge_ensemble"
    )
    rows = [columns(line) for line in versions.splitlines()]
    assert rows[0] == ["version", "aliases", "status", "created", "config_hash", "parents"]
    assert rows[1][:3] == ["3", "candidate", "candidate"]
    assert rows[1][-3:] == [JOINT, "v2,", "v3"]
    assert rows[2][:3] == ["2", "champion", "champion"]
    assert rows[3][:3] == ["1", "-", "-"]
    lines = metrics.splitlines()
    assert columns(lines[1]) == ["metric", "v3", "v2", "v1"]
    assert "test, replay: ensemble vs bs_delta" in metrics
    # v2, logged under names no stage uses, shows its few held-out metrics as they are.
    assert [columns(line) for line in lines if line.startswith("test_es10")] == [
        ["test_es10", "-", "0.112", "-"]
    ]
    assert promotion.splitlines()[1].strip().startswith("v3: test ES10 (replay) 2.671")
    assert hint == f"every metric of every version: hedge models show {ENSEMBLE} --all"


def test_no_champion_yet_is_one_line_naming_the_latest_candidate(capsys, mlflow_client, tmp_path):
    _candidate_ensemble(mlflow_client, tmp_path, joints=())
    for argv in (["models", "show", f"{ENSEMBLE}@champion"], ["evaluate", f"{ENSEMBLE}@champion"]):
        code, out, err = hedge(capsys, *argv)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1
        assert err.startswith(
            f"hedge: error: {ENSEMBLE} has no version aliased 'champion' (none has been "
            "promoted yet); its latest is v1 [candidate]: test ES10 (replay) 2.671 does not "
            "beat BS delta's 2.614 by 1.0%; aliases: candidate=v1; instead: hedge "
        )
        assert err.rstrip().endswith(f"{ENSEMBLE}@latest")
    code, out, _ = hedge(capsys, "models", "show", f"{ENSEMBLE}@latest")
    assert code == 0 and out.startswith(f"{ENSEMBLE} v1  [candidate]")
