"""``runtime.settings``: the ``HEDGE_*`` environment, read in one place, when called."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pydantic
import pytest
from pydantic import SecretStr

from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.settings import (
    REPO_ROOT,
    VARIABLES,
    BadRowPolicy,
    Settings,
    SettingsError,
    UserError,
    child_environment,
)

PACKAGE_DIR = REPO_ROOT / "hedge_pipeline"
SETTINGS_FILE = PACKAGE_DIR / "runtime" / "settings.py"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """``os.environ`` without any variable of the settings (restored after the test)."""
    for variable in VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


def test_defaults_are_those_of_the_design():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.data_dir == (REPO_ROOT / "data").resolve()
    assert settings.profile == "default"
    assert settings.source == "synthetic"
    assert settings.synthetic_seed == 7
    assert settings.alpaca_symbols == ()
    assert settings.bad_rows == "reject"
    assert settings.history_weeks == 4
    assert settings.devices == 1
    assert (settings.launcher, settings.nnodes, settings.rdzv_endpoint) == ("subprocess", 1, None)
    assert (settings.gpus, settings.ray_address, settings.k8s_image) == (0, None, None)
    assert (settings.k8s_namespace, settings.k8s_data_claim) == (None, None)
    assert settings.nightly_cron == "0 2 * * *"
    assert settings.nightly_timezone == "UTC"
    assert settings.portfolio_dir is None
    assert settings.ui_url == "http://127.0.0.1:3000"
    assert settings.progress is None  # off, unless hedge run turns it on
    assert settings.dagster_postgres_url is None  # Dagster's storage in SQLite files


def test_every_field_has_one_hedge_variable():
    assert set(VARIABLES) == set(Settings.model_fields)
    assert all(v.startswith("HEDGE_") for v in VARIABLES.values())
    assert len(set(VARIABLES.values())) == len(VARIABLES)
    assert Settings.variable("source") == "HEDGE_SOURCE"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("HEDGE_DATA_DIR", "/tmp/elsewhere/../hedge-data", "data_dir", Path("/tmp/hedge-data")),
        ("HEDGE_PROFILE", "smoke", "profile", "smoke"),
        ("HEDGE_PROFILE", "full", "profile", "full"),
        ("HEDGE_SOURCE", "files", "source", "files"),
        ("HEDGE_SOURCE", "alpaca", "source", "alpaca"),
        ("HEDGE_SYNTHETIC_SEED", "11", "synthetic_seed", 11),
        ("HEDGE_SYNTHETIC_SEED", "-3", "synthetic_seed", -3),
        ("HEDGE_ALPACA_SYMBOLS", " SPY, ,QQQ,", "alpaca_symbols", ("SPY", "QQQ")),
        ("HEDGE_ALPACA_SYMBOLS", "", "alpaca_symbols", ()),
        ("HEDGE_BAD_ROWS", "quarantine", "bad_rows", "quarantine"),
        ("HEDGE_DEVICES", "4", "devices", 4),
        ("HEDGE_HISTORY_WEEKS", "8", "history_weeks", 8),
        ("HEDGE_LAUNCHER", "ray", "launcher", "ray"),
        ("HEDGE_LAUNCHER", "k8s", "launcher", "k8s"),
        ("HEDGE_NNODES", "4", "nnodes", 4),
        ("HEDGE_RDZV_ENDPOINT", "node0.cluster:29400", "rdzv_endpoint", "node0.cluster:29400"),
        ("HEDGE_RDZV_ENDPOINT", "", "rdzv_endpoint", None),
        ("HEDGE_GPUS", "8", "gpus", 8),
        ("HEDGE_RAY_ADDRESS", "http://ray-head:8265", "ray_address", "http://ray-head:8265"),
        ("HEDGE_RAY_ADDRESS", "", "ray_address", None),
        ("HEDGE_K8S_IMAGE", "ghcr.io/acme/hedge:abc", "k8s_image", "ghcr.io/acme/hedge:abc"),
        ("HEDGE_K8S_NAMESPACE", "research", "k8s_namespace", "research"),
        ("HEDGE_K8S_DATA_CLAIM", "hedge-data", "k8s_data_claim", "hedge-data"),
        ("HEDGE_PROGRESS", "1", "progress", True),
        ("HEDGE_PROGRESS", "0", "progress", False),
        ("HEDGE_NIGHTLY_CRON", "30 23 * * 1-5", "nightly_cron", "30 23 * * 1-5"),
        ("HEDGE_NIGHTLY_TIMEZONE", "America/Chicago", "nightly_timezone", "America/Chicago"),
        ("HEDGE_PORTFOLIO_DIR", "/srv/templates", "portfolio_dir", Path("/srv/templates")),
        ("HEDGE_PORTFOLIO_DIR", "~/templates", "portfolio_dir", Path.home() / "templates"),
        ("HEDGE_PORTFOLIO_DIR", "", "portfolio_dir", None),
        ("HEDGE_UI_URL", "http://127.0.0.1:3999", "ui_url", "http://127.0.0.1:3999"),
        (
            "HEDGE_DAGSTER_POSTGRES_URL",
            "postgresql://hedge:pw@db:5432/dagster",
            "dagster_postgres_url",
            SecretStr("postgresql://hedge:pw@db:5432/dagster"),
        ),
        (
            "HEDGE_DAGSTER_POSTGRES_URL",
            "postgresql+psycopg2://hedge@db/dagster",
            "dagster_postgres_url",
            SecretStr("postgresql+psycopg2://hedge@db/dagster"),
        ),
        ("HEDGE_DAGSTER_POSTGRES_URL", "", "dagster_postgres_url", None),
    ],
)
def test_each_variable_is_parsed_into_its_field(variable, value, field, expected):
    settings = Settings.from_env({variable: value})
    assert getattr(settings, field) == expected
    others = {f: v for f, v in Settings().model_dump().items() if f != field}
    assert {f: v for f, v in settings.model_dump().items() if f != field} == others


def test_a_remote_child_gets_the_hedge_variables_and_the_resolved_data_dir_only(tmp_path):
    environ = {
        "HEDGE_DATA_DIR": str(tmp_path / "x" / ".." / "data"),
        "HEDGE_PROFILE": "smoke",
        "HEDGE_LAUNCHER": "ray",
        "HEDGE_DAGSTER_POSTGRES_URL": "postgresql://hedge:Canary-pw-91@db/dagster",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "RAY_AUTH_TOKEN": "secret-token",
        "HOME": "/root",
    }
    assert child_environment(environ) == {
        "HEDGE_DATA_DIR": str((tmp_path / "data").resolve()),
        "HEDGE_LAUNCHER": "ray",
        "HEDGE_PROFILE": "smoke",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }
    with pytest.raises(SettingsError, match="HEDGE_LAUNCHER='slurm'"):
        child_environment({"HEDGE_LAUNCHER": "slurm"})  # here, not on the cluster


def test_a_relative_data_dir_resolves_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Settings.from_env({"HEDGE_DATA_DIR": "data"}).data_dir == tmp_path.resolve() / "data"


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("HEDGE_SOURCE", "bogus", "expected one of synthetic, files, alpaca, history"),
        ("HEDGE_SOURCE", "", "expected one of synthetic, files, alpaca, history"),
        ("HEDGE_SOURCE", "Files", "expected one of synthetic, files, alpaca, history"),
        ("HEDGE_PROFILE", "huge", "expected one of smoke, default, full"),
        ("HEDGE_BAD_ROWS", "drop", "expected one of reject, quarantine"),
        ("HEDGE_SYNTHETIC_SEED", "seven", "expected an integer"),
        ("HEDGE_SYNTHETIC_SEED", "7.0", "expected an integer"),
        ("HEDGE_DEVICES", "0", "expected an integer >= 1"),
        ("HEDGE_DEVICES", "two", "expected an integer >= 1"),
        ("HEDGE_HISTORY_WEEKS", "0", "expected an integer from 1 to 52"),
        ("HEDGE_HISTORY_WEEKS", "53", "expected an integer from 1 to 52"),
        ("HEDGE_PROGRESS", "sometimes", "expected 0 or 1"),
        ("HEDGE_LAUNCHER", "slurm", "expected one of subprocess, torchrun, ray, k8s"),
        ("HEDGE_NNODES", "0", "expected an integer >= 1"),
        ("HEDGE_RDZV_ENDPOINT", "node0", "expected host:port"),
        ("HEDGE_RDZV_ENDPOINT", "node0:port", "expected host:port"),
        ("HEDGE_GPUS", "-1", "expected an integer >= 0"),
    ],
)
def test_a_bad_value_is_refused_naming_variable_value_and_choices(variable, value, accepted):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: value})
    assert str(caught.value) == f"{variable}={value!r}: {accepted}"
    assert isinstance(caught.value, ValueError)  # what callers caught before
    assert isinstance(caught.value, UserError)  # what `hedge` prints as one line
    # One message, not pydantic's report chained underneath it.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    "value",
    [
        "postgres://hedge:Canary-pw-91@db/dagster",  # SQLAlchemy's scheme is postgresql
        "hedge:Canary-pw-91@db:5432/dagster",
        "db:5432?password=Canary-pw-91",
    ],
)
def test_a_bad_postgres_url_is_refused_without_showing_its_password(value):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"HEDGE_DAGSTER_POSTGRES_URL": value, "HEDGE_DEVICES": "0"})
    assert str(caught.value) == (
        "HEDGE_DEVICES='0': expected an integer >= 1; HEDGE_DAGSTER_POSTGRES_URL=<not shown: it "
        "holds a password>: expected a postgresql://user:password@host:port/database URL"
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_postgres_url_is_hidden_in_the_settings_repr():
    settings = Settings.from_env({"HEDGE_DAGSTER_POSTGRES_URL": "postgresql://h:Canary-pw-91@db/d"})
    assert "Canary-pw-91" not in repr(settings) + str(settings)
    assert settings.dagster_postgres_url.get_secret_value() == "postgresql://h:Canary-pw-91@db/d"


def test_several_bad_values_are_named_in_one_error():
    with pytest.raises(SettingsError, match=r"HEDGE_PROFILE='huge'.*; HEDGE_DEVICES='0'"):
        Settings.from_env({"HEDGE_PROFILE": "huge", "HEDGE_DEVICES": "0", "HEDGE_SOURCE": "files"})


def test_settings_are_frozen():
    with pytest.raises(pydantic.ValidationError):
        Settings().source = "files"  # type: ignore[misc]


def test_from_env_reads_os_environ_at_each_call(clean_env):
    assert Settings.from_env().source == "synthetic"
    clean_env.setenv("HEDGE_SOURCE", "files")
    clean_env.setenv("HEDGE_DEVICES", "2")
    assert (Settings.from_env().source, Settings.from_env().devices) == ("files", 2)
    clean_env.setenv("HEDGE_SOURCE", "bogus")
    with pytest.raises(SettingsError, match="HEDGE_SOURCE='bogus'"):
        Settings.from_env()
    # A mapping given is the only one read.
    assert Settings.from_env({"HEDGE_SOURCE": "alpaca"}).source == "alpaca"


def test_the_choices_agree_with_the_modules_that_use_them():
    from hedge_pipeline.cli.ui_client import DEFAULT_URL
    from hedge_pipeline.orchestration.resources import SOURCE_KINDS
    from hedge_pipeline.runtime.profiles import PROFILE_NAMES, PROFILES
    from hedge_pipeline.stages.market_data.validation import POLICIES

    # runtime imports no stage, so the policies are spelled twice and held equal here.
    assert get_args(BadRowPolicy) == POLICIES
    assert SOURCE_KINDS == ("synthetic", "files", "alpaca", "history")
    assert PROFILE_NAMES == tuple(PROFILES) == ("smoke", "default", "full")
    # ui_client is standard-library only (the CLI starts fast), so its default is spelled twice.
    assert Settings().ui_url == DEFAULT_URL


def test_consumers_follow_the_environment_between_calls(clean_env, tmp_path):
    tmp_path = tmp_path.resolve()
    from hedge_pipeline.orchestration.resources import resources_from_env
    from hedge_pipeline.runtime.profiles import get_profile
    from hedge_pipeline.stages.automation.schedules import nightly_retrain_from_env
    from hedge_pipeline.stages.selection.templates import ENV_DIR, template_files

    clean_env.setenv("HEDGE_DATA_DIR", str(tmp_path / "a"))
    assert paths.data_dir() == tmp_path / "a"
    assert paths.warehouse_path() == tmp_path / "a" / "warehouse.duckdb"
    clean_env.setenv("HEDGE_DATA_DIR", str(tmp_path / "b"))
    assert paths.dagster_dir() == tmp_path / "b" / "dagster"
    assert paths.instance_env()["HEDGE_DATA_DIR"] == str(tmp_path / "b")

    assert get_profile().name == "default"
    clean_env.setenv("HEDGE_PROFILE", "smoke")
    assert get_profile().name == "smoke"
    assert get_profile("full").name == "full"  # an explicit name wins

    clean_env.setenv("HEDGE_SOURCE", "files")
    clean_env.setenv("HEDGE_SYNTHETIC_SEED", "9")
    clean_env.setenv("HEDGE_BAD_ROWS", "quarantine")
    clean_env.setenv("HEDGE_DEVICES", "3")
    resources = resources_from_env()
    assert (resources["source"].kind, resources["source"].seed) == ("files", 9)
    assert resources["quality_policy"].bad_rows == "quarantine"
    assert resources["launcher"].devices == 3
    clean_env.setenv("HEDGE_LAUNCHER", "ray")
    clean_env.setenv("HEDGE_RAY_ADDRESS", "http://ray-head:8265")
    launcher = resources_from_env()["launcher"]
    assert (launcher.kind, launcher.ray_address, launcher.devices) == (
        "ray",
        "http://ray-head:8265",
        3,
    )
    assert resources["profile"].name == "smoke"
    assert resources["warehouse_db"].path == str(tmp_path / "b" / "warehouse.duckdb")

    clean_env.setenv("HEDGE_SOURCE", "history")
    clean_env.setenv("HEDGE_HISTORY", "sp500")
    clean_env.setenv("HEDGE_HISTORY_WEEKS", "8")
    assert resources_from_env()["source"].build().weeks == 8

    clean_env.setenv("HEDGE_NIGHTLY_CRON", "15 3 * * *")
    assert nightly_retrain_from_env().cron_schedule == "15 3 * * *"

    assert ENV_DIR == "HEDGE_PORTFOLIO_DIR"
    clean_env.setenv(ENV_DIR, str(tmp_path))
    (tmp_path / "mine.json").write_text("{}")
    assert template_files()["mine"].origin == ENV_DIR


def test_resources_refuse_a_bad_variable_with_its_name(clean_env):
    from hedge_pipeline.orchestration.resources import ChainSourceResource, resources_from_env

    clean_env.setenv("HEDGE_SOURCE", "bogus")
    with pytest.raises(SettingsError, match=r"HEDGE_SOURCE='bogus': expected one of synthetic"):
        resources_from_env()
    clean_env.setenv("HEDGE_SOURCE", "alpaca")
    clean_env.setenv("HEDGE_ALPACA_SYMBOLS", "SPY,QQQ")
    source = ChainSourceResource.from_env()
    assert (source.kind, source.alpaca_symbols) == ("alpaca", ["SPY", "QQQ"])


def test_hedge_prints_a_bad_variable_without_a_traceback(clean_env, capsys):
    from hedge_pipeline.cli import main as cli

    clean_env.setenv("HEDGE_SOURCE", "bogus")
    # backfill reads HEDGE_UI_URL (and so the settings) when it runs, before any request.
    assert cli.main(["backfill", "--codes", "3CN5"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "hedge: error: HEDGE_SOURCE='bogus': expected one of synthetic, files, alpaca, history\n"
    )


def test_nothing_reads_the_environment_at_import():
    """Every module that reads a variable imports cleanly with every variable bogus; only a
    call reads (and refuses) them."""
    modules = [
        "hedge_pipeline.runtime.settings",
        "hedge_pipeline.runtime.paths",
        "hedge_pipeline.runtime.profiles",
        "hedge_pipeline.orchestration.resources",
        "hedge_pipeline.stages.automation.schedules",
        "hedge_pipeline.stages.selection.templates",
        "hedge_pipeline.cli.backfill",
        "hedge_pipeline.cli.main",
        "hedge_pipeline.bench.pipeline",
    ]
    code = (
        "import importlib\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from hedge_pipeline.runtime.settings import Settings, SettingsError\n"
        "try:\n"
        "    Settings.from_env()\n"
        "except SettingsError as exc:\n"
        "    print(exc)\n"
    )
    bogus = {v: "bogus" for v in VARIABLES.values()}
    env = {**os.environ, **bogus, "HEDGE_DATA_DIR": os.environ.get("HEDGE_DATA_DIR", "/tmp")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for variable in ("HEDGE_SOURCE", "HEDGE_PROFILE", "HEDGE_BAD_ROWS", "HEDGE_DEVICES"):
        assert f"{variable}='bogus'" in out.stdout


def _environ_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, key) of every read of the environment in ``tree``: ``os.environ.get(k)``,
    ``os.getenv(k)``, ``os.environ[k]`` loaded, ``k in os.environ``, and ``from os import
    environ/getenv``. A key that is not a string literal is reported as ``<dynamic>``.

    Writes are not reads: ``os.environ["HEDGE_SOURCE"] = ...`` and ``os.environ.update(...)``
    in ``cli/main.py`` set the environment of the Dagster runs ``hedge`` starts, and copies
    (``dict(os.environ)``, ``{**os.environ, ...}``) hand it on to children.
    """

    def is_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )

    def key(node: ast.AST | None) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        return "<dynamic>"

    reads: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            func = node.func
            reads_environ = func.attr in ("get", "pop", "setdefault") and is_environ(func.value)
            is_getenv = (
                func.attr == "getenv" and isinstance(func.value, ast.Name) and func.value.id == "os"
            )
            if reads_environ or is_getenv:
                reads.append((node.lineno, key(node.args[0] if node.args else None)))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and is_environ(node.value)
        ):
            reads.append((node.lineno, key(node.slice)))
        elif isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators):
            reads.append((node.lineno, key(node.left)))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("environ", "getenv", "getenvb", "environb"):
                    reads.append((node.lineno, f"<from os import {alias.name}>"))
    return reads


def test_the_reader_finds_reads_and_passes_writes():
    source = (
        "import os\n"
        "a = os.environ.get('HEDGE_SOURCE')\n"
        "b = os.getenv('HEDGE_PROFILE', 'x')\n"
        "c = os.environ['HEDGE_DEVICES']\n"
        "d = 'HEDGE_UI_URL' in os.environ\n"
        "e = os.environ.get(NAME)\n"
        "os.environ['HEDGE_SOURCE'] = 'files'\n"
        "os.environ.update({'HEDGE_PROFILE': 'smoke'})\n"
        "f = {**os.environ}\n"
    )
    assert _environ_reads(ast.parse(source)) == [
        (2, "HEDGE_SOURCE"),
        (3, "HEDGE_PROFILE"),
        (4, "HEDGE_DEVICES"),
        (5, "HEDGE_UI_URL"),
        (6, "<dynamic>"),
    ]


def test_only_settings_reads_hedge_variables():
    """Outside ``runtime/settings.py`` no module reads a ``HEDGE_*`` variable (or any variable
    through a name the reader cannot see); other tools' variables (``MLFLOW_TRACKING_URI``,
    torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``) are theirs to read."""
    offenders = []
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert SETTINGS_FILE in files and len(files) > 50
    for path in files:
        if path == SETTINGS_FILE:
            continue
        for line, name in _environ_reads(ast.parse(path.read_text(), filename=str(path))):
            if name.startswith("HEDGE_") or name.startswith("<"):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{line}: {name}")
    assert not offenders, "read HEDGE_* through runtime.settings.Settings:\n" + "\n".join(offenders)
    # The names are spelled once, in settings.py (messages and docstrings may quote them).
    spelled = re.findall(r'"(HEDGE_[A-Z0-9_]+)"', SETTINGS_FILE.read_text())  # K8S has a digit
    assert spelled == list(VARIABLES.values())
