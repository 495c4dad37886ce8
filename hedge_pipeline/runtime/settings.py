"""The ``HEDGE_*`` environment, read in one place (docs/design.md §2, §4 and §6).

``Settings.from_env()`` reads every variable when it is called, never at import: tests and
``hedge`` set variables between calls, so callers build a fresh ``Settings`` where they need a
value (``Settings.from_env().data_dir``) instead of keeping one. A bad value fails with one
``SettingsError`` that names the variable, the value and what is accepted::

    HEDGE_SOURCE='bogus': expected one of synthetic, files, alpaca, history

Variable                  Field              Default
========================  =================  ============================
``HEDGE_DATA_DIR``        ``data_dir``       the repo's ``data/`` (§2)
``HEDGE_PROFILE``         ``profile``        ``default`` (§6)
``HEDGE_SOURCE``          ``source``         ``synthetic`` (§4)
``HEDGE_SYNTHETIC_SEED``  ``synthetic_seed`` ``7``
``HEDGE_ALPACA_SYMBOLS``  ``alpaca_symbols`` none (comma-separated)
``HEDGE_HISTORY``         ``history``        none (``sp500``, ``nasdaq``, ``wti`` or a file path)
``HEDGE_HISTORY_SYMBOL``  ``history_symbol`` the history's name (file stem, upper-cased)
``HEDGE_HISTORY_WEEKS``   ``history_weeks``  ``4`` (each weekly code's quoted life, 1 to 52)
``HEDGE_BAD_ROWS``        ``bad_rows``       ``reject``
``HEDGE_CODES_PER_RUN``   ``codes_per_run``  ``50`` (weekly codes per market-data run)
``HEDGE_DEVICES``         ``devices``        ``1`` (>1 launches torchrun)
``HEDGE_LAUNCHER``        ``launcher``       ``subprocess`` (or ``torchrun``, ``ray``, ``k8s``)
``HEDGE_NNODES``          ``nnodes``         ``1`` (torchrun nodes; >1 needs a rendezvous)
``HEDGE_RDZV_ENDPOINT``   ``rdzv_endpoint``  none: ``--standalone`` (torchrun ``host:port``)
``HEDGE_GPUS``            ``gpus``           ``0`` (GPUs a Ray job or a pod asks for)
``HEDGE_RAY_ADDRESS``     ``ray_address``    none: Ray's own ``RAY_ADDRESS`` (dashboard URL)
``HEDGE_K8S_IMAGE``       ``k8s_image``      none (the training pod's image; needed by ``k8s``)
``HEDGE_K8S_NAMESPACE``   ``k8s_namespace``  none: the current namespace, else ``default``
``HEDGE_K8S_DATA_CLAIM``  ``k8s_data_claim`` none (the PVC holding the data directory)
``HEDGE_NIGHTLY_CRON``    ``nightly_cron``   ``0 2 * * *``
``HEDGE_NIGHTLY_TIMEZONE`` ``nightly_timezone`` ``UTC``
``HEDGE_PORTFOLIO_DIR``   ``portfolio_dir``  none (packaged templates only)
``HEDGE_UI_URL``          ``ui_url``         ``http://127.0.0.1:3000``
``HEDGE_PROGRESS``        ``progress``       unset: off, on in ``hedge run`` (epoch lines)
``HEDGE_DAGSTER_POSTGRES_URL`` ``dagster_postgres_url`` none: SQLite under the data directory

The nightly cron and time zone are checked where the schedule is built (that takes Dagster),
with a ``SettingsError`` that names its variable. ``SettingsError`` is a ``UserError``: the
``hedge`` command prints it as one line and exits 2 (``hedge_pipeline.cli.main``).

``HEDGE_DAGSTER_POSTGRES_URL`` (``postgresql://user:password@host:port/database``) puts Dagster's
runs, event logs and schedules in that Postgres database (``orchestration.instance_storage``).
It holds a password: it is a ``SecretStr`` (a ``repr`` of the settings hides it), and an error
about it names the variable and what it accepts but never shows the value.

Variables that belong to other tools are theirs to read: ``MLFLOW_TRACKING_URI`` (MLflow reads
it itself, in every process),
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun), ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``/
``RAY_AUTH_TOKEN_PATH`` (Ray's token authentication), ``ALPACA_*`` keys (``dagster.EnvVar``,
so that Dagster never shows their values). :func:`child_environment` is what a training child
on another machine (a Ray job, a pod) is given of this environment. This module imports no
stage: the bad-row policies are spelled here and a test holds them equal to
``stages.market_data.validation.POLICIES``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

__all__ = [
    "DEFAULT_NIGHTLY_CRON",
    "DEFAULT_NIGHTLY_TIMEZONE",
    "DEFAULT_UI_URL",
    "REPO_ROOT",
    "VARIABLES",
    "BadRowPolicy",
    "LauncherKind",
    "ProfileName",
    "Settings",
    "SettingsError",
    "SourceKind",
    "UserError",
    "child_environment",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

SourceKind = Literal["synthetic", "files", "alpaca", "history"]
ProfileName = Literal["smoke", "default", "full"]
BadRowPolicy = Literal["reject", "quarantine"]
LauncherKind = Literal["subprocess", "torchrun", "ray", "k8s"]

DEFAULT_NIGHTLY_CRON = "0 2 * * *"
DEFAULT_NIGHTLY_TIMEZONE = "UTC"
DEFAULT_UI_URL = "http://127.0.0.1:3000"

# Field → environment variable, in the order of the module docstring.
VARIABLES: dict[str, str] = {
    "data_dir": "HEDGE_DATA_DIR",
    "profile": "HEDGE_PROFILE",
    "source": "HEDGE_SOURCE",
    "synthetic_seed": "HEDGE_SYNTHETIC_SEED",
    "alpaca_symbols": "HEDGE_ALPACA_SYMBOLS",
    "history": "HEDGE_HISTORY",
    "history_symbol": "HEDGE_HISTORY_SYMBOL",
    "history_weeks": "HEDGE_HISTORY_WEEKS",
    "bad_rows": "HEDGE_BAD_ROWS",
    "codes_per_run": "HEDGE_CODES_PER_RUN",
    "devices": "HEDGE_DEVICES",
    "launcher": "HEDGE_LAUNCHER",
    "nnodes": "HEDGE_NNODES",
    "rdzv_endpoint": "HEDGE_RDZV_ENDPOINT",
    "gpus": "HEDGE_GPUS",
    "ray_address": "HEDGE_RAY_ADDRESS",
    "k8s_image": "HEDGE_K8S_IMAGE",
    "k8s_namespace": "HEDGE_K8S_NAMESPACE",
    "k8s_data_claim": "HEDGE_K8S_DATA_CLAIM",
    "nightly_cron": "HEDGE_NIGHTLY_CRON",
    "nightly_timezone": "HEDGE_NIGHTLY_TIMEZONE",
    "portfolio_dir": "HEDGE_PORTFOLIO_DIR",
    "ui_url": "HEDGE_UI_URL",
    "progress": "HEDGE_PROGRESS",
    "dagster_postgres_url": "HEDGE_DAGSTER_POSTGRES_URL",
}

# What a variable accepts, for the error message (Literal fields list their choices instead).
_EXPECTED = {
    "synthetic_seed": "an integer",
    "devices": "an integer >= 1",
    "nnodes": "an integer >= 1",
    "codes_per_run": "an integer >= 1",
    "gpus": "an integer >= 0",
    "rdzv_endpoint": "host:port",
    "history_weeks": "an integer from 1 to 52",
    "progress": "0 or 1",
    "dagster_postgres_url": "a postgresql://user:password@host:port/database URL",
}

# The URL schemes SQLAlchemy's psycopg2 dialect (what dagster-postgres connects with) accepts.
_POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://")


class UserError(Exception):
    """A failure the user can fix from its message alone: a bad ``HEDGE_*`` value, an unknown
    template, model or alias, a missing report.

    The ``hedge`` command prints such an error as one line (``hedge: error: <message>``) and
    exits 2, keeping the traceback for ``hedge --verbose``. It is a class of its own, not every
    ``ValueError``, so that a genuine bug still shows its traceback: only code that knows the
    cause is the user's input raises it (or converts a domain error into it).
    """


class SettingsError(UserError, ValueError):
    """A ``HEDGE_*`` variable with a value the pipeline cannot use; the message names it.

    A ``ValueError`` too, which is what callers caught before the settings were typed.
    """


class Settings(BaseModel):
    """One typed field per ``HEDGE_*`` variable (the table in the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Field(default=REPO_ROOT / "data", description="state of §2, resolved")
    profile: ProfileName = "default"
    source: SourceKind = "synthetic"
    synthetic_seed: int = 7
    alpaca_symbols: tuple[str, ...] = ()
    history: str | None = None
    history_symbol: str | None = None
    history_weeks: int = Field(default=4, ge=1, le=52)
    bad_rows: BadRowPolicy = "reject"
    codes_per_run: int = Field(default=50, ge=1)
    devices: int = Field(default=1, ge=1)
    launcher: LauncherKind = "subprocess"
    nnodes: int = Field(default=1, ge=1)
    rdzv_endpoint: str | None = Field(default=None, pattern=r"^[^\s:]+:\d+$")
    gpus: int = Field(default=0, ge=0)
    ray_address: str | None = None
    k8s_image: str | None = None
    k8s_namespace: str | None = None
    k8s_data_claim: str | None = None
    nightly_cron: str = DEFAULT_NIGHTLY_CRON
    nightly_timezone: str = DEFAULT_NIGHTLY_TIMEZONE
    portfolio_dir: Path | None = None
    ui_url: str = DEFAULT_UI_URL
    progress: bool | None = None
    dagster_postgres_url: SecretStr | None = None

    @field_validator("data_dir")
    @classmethod
    def _resolve(cls, value: Path) -> Path:
        return value.resolve()

    @field_validator(
        "synthetic_seed", "devices", "history_weeks", "nnodes", "gpus", "codes_per_run",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _integer(cls, value: Any) -> Any:
        # int()'s grammar, as before: '7.0' is refused (pydantic alone would take it).
        return int(value) if isinstance(value, str) else value

    @field_validator("dagster_postgres_url", mode="before")
    @classmethod
    def _postgres_url(cls, value: Any) -> Any:
        # Checked here, not left to SQLAlchemy: its "Could not parse SQLAlchemy URL from string"
        # quotes the whole URL, password included.
        if isinstance(value, str) and not value.startswith(_POSTGRES_SCHEMES):
            raise ValueError("not a postgresql:// URL")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``environ`` (default: ``os.environ``, read now).

        Unset variables take their defaults; an empty ``HEDGE_ALPACA_SYMBOLS`` is no symbols, an
        empty ``HEDGE_PORTFOLIO_DIR`` is none, an empty ``HEDGE_DAGSTER_POSTGRES_URL`` is
        unset (SQLite), and so is an empty launcher address, image, namespace or claim; every
        other value is taken as given.
        """
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {f: env[v] for f, v in VARIABLES.items() if v in env}
        if "alpaca_symbols" in raw:
            raw["alpaca_symbols"] = tuple(
                s.strip() for s in raw["alpaca_symbols"].split(",") if s.strip()
            )
        if "portfolio_dir" in raw:
            folder = raw["portfolio_dir"]
            raw["portfolio_dir"] = Path(folder).expanduser() if folder else None
        for optional in ("dagster_postgres_url", *_EMPTY_IS_UNSET):
            if optional in raw:
                raw[optional] = raw[optional] or None
        try:
            return cls(**raw)
        except ValidationError as error:
            fields = dict.fromkeys(str(e["loc"][0]) for e in error.errors())
            problems = [
                f"{VARIABLES[f]}={_shown(f, env[VARIABLES[f]])}: {_expected(f)}" for f in fields
            ]
            raise SettingsError("; ".join(problems)) from None

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field`` (``variable('source') == 'HEDGE_SOURCE'``)."""
        return VARIABLES[field]


# Optional strings of the launchers where an empty value (``HEDGE_RAY_ADDRESS=``) means unset.
_EMPTY_IS_UNSET = ("rdzv_endpoint", "ray_address", "k8s_image", "k8s_namespace", "k8s_data_claim")


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a training child on another machine gets of ``environ`` (default: ``os.environ``).

    A subprocess inherits the whole environment; a Ray job or a pod gets only this: every
    ``HEDGE_*`` variable that is set, ``HEDGE_DATA_DIR`` as the resolved path (the data
    directory must be mounted at that same path there: the README's launchers section), and
    ``MLFLOW_TRACKING_URI`` when set. Not the Postgres URL: it holds a password, and a child
    never opens Dagster's storage.

    >>> child_environment({'HEDGE_PROFILE': 'smoke', 'HEDGE_DATA_DIR': '/shared/hedge',
    ...                    'HEDGE_DAGSTER_POSTGRES_URL': 'postgresql://u:pw@db/d', 'HOME': '/root'})
    {'HEDGE_DATA_DIR': '/shared/hedge', 'HEDGE_PROFILE': 'smoke'}
    """
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)  # a bad value fails here, not on the cluster
    forwarded = {
        variable: env[variable]
        for field, variable in VARIABLES.items()
        if variable in env and field != "dagster_postgres_url"
    }
    forwarded[VARIABLES["data_dir"]] = str(settings.data_dir)
    if "MLFLOW_TRACKING_URI" in env:
        forwarded["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    return dict(sorted(forwarded.items()))


def _shown(field: str, value: str) -> str:
    """``value`` as an error message shows it: quoted, unless the field is a secret."""
    if SecretStr in get_args(Settings.model_fields[field].annotation):
        return "<not shown: it holds a password>"
    return repr(value)


def _expected(field: str) -> str:
    annotation = Settings.model_fields[field].annotation
    if get_origin(annotation) is Literal:
        return f"expected one of {', '.join(get_args(annotation))}"
    return f"expected {_EXPECTED.get(field, 'a valid value')}"
