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
``HEDGE_HISTORY``         ``history``        none (``sp500``, ``nasdaq`` or a CSV/Parquet path)
``HEDGE_HISTORY_SYMBOL``  ``history_symbol`` the history's name (file stem, upper-cased)
``HEDGE_HISTORY_WEEKS``   ``history_weeks``  ``4`` (each weekly code's quoted life, 1 to 52)
``HEDGE_BAD_ROWS``        ``bad_rows``       ``reject``
``HEDGE_DEVICES``         ``devices``        ``1`` (>1 launches torchrun)
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
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun), ``ALPACA_*`` keys (``dagster.EnvVar``, so
that Dagster never shows their values). This module imports no stage: the bad-row policies are
spelled here and a test holds them equal to ``stages.market_data.validation.POLICIES``.
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
    "ProfileName",
    "Settings",
    "SettingsError",
    "SourceKind",
    "UserError",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

SourceKind = Literal["synthetic", "files", "alpaca", "history"]
ProfileName = Literal["smoke", "default", "full"]
BadRowPolicy = Literal["reject", "quarantine"]

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
    "devices": "HEDGE_DEVICES",
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
    devices: int = Field(default=1, ge=1)
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

    @field_validator("synthetic_seed", "devices", "history_weeks", mode="before")
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
        empty ``HEDGE_PORTFOLIO_DIR`` is none and an empty ``HEDGE_DAGSTER_POSTGRES_URL`` is
        unset (SQLite); every other value is taken as given.
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
        if "dagster_postgres_url" in raw:
            raw["dagster_postgres_url"] = raw["dagster_postgres_url"] or None
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
