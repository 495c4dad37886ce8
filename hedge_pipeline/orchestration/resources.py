"""Resources shared by every area: the source of raw chains, the warehouse, quality policy.

Values come from the environment at load time (docs/design.md §4 and §2), through one
``runtime.settings.Settings``: ``HEDGE_SOURCE`` picks the source, ``HEDGE_DATA_DIR`` the
warehouse, ``HEDGE_BAD_ROWS`` the bad-row policy (of the quotes, and of the history source's
price rows, which the source itself reads), ``HEDGE_HISTORY``/``HEDGE_HISTORY_SYMBOL`` the
history source's series. Alpaca keys are ``EnvVar``s, so Dagster resolves
them only inside the run and never shows their values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import dagster as dg
import duckdb
from pydantic import Field

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.profiles import Profile, get_profile
from hedge_pipeline.runtime.settings import Settings, SourceKind
from hedge_pipeline.stages.market_data.sources.base import ChainSource
from hedge_pipeline.tables import warehouse

SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)


class ChainSourceResource(dg.ConfigurableResource):
    """Builds the configured ``ChainSource`` (docs/design.md §4)."""

    kind: str = Field(default="synthetic", description="synthetic | files | alpaca | history")
    seed: int = Field(default=7, description="seed of the synthetic market generator")
    raw_dir: str | None = Field(default=None, description="root of file drops (files source)")
    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_symbols: list[str] = Field(default_factory=list, description="underlyings (alpaca)")
    history: str | None = Field(
        default=None, description="history source: sp500, nasdaq, wti, or a CSV/Parquet path"
    )
    history_symbol: str | None = Field(
        default=None, description="history source: the underlying (default: from the history)"
    )
    bad_rows: str = Field(
        default="reject", description="history source: reject | quarantine bad history rows"
    )
    history_weeks: int = Field(
        default=4, description="history source: each weekly code's quoted life in weeks"
    )

    def build(self) -> ChainSource:
        if self.kind == "synthetic":
            from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource

            return SyntheticSource(seed=self.seed)
        if self.kind == "files":
            from hedge_pipeline.stages.market_data.sources.files import FilesSource

            return FilesSource(Path(self.raw_dir) if self.raw_dir else paths.raw_dir())
        if self.kind == "alpaca":
            from hedge_pipeline.stages.market_data.sources.alpaca import AlpacaSource

            if not (self.alpaca_api_key and self.alpaca_secret_key and self.alpaca_symbols):
                raise ValueError(
                    "the alpaca source needs ALPACA_API_KEY, ALPACA_SECRET_KEY and "
                    "HEDGE_ALPACA_SYMBOLS (comma-separated underlyings, e.g. SPY,QQQ)"
                )
            return AlpacaSource(
                api_key=self.alpaca_api_key,
                secret_key=self.alpaca_secret_key,
                symbols=self.alpaca_symbols,
            )
        if self.kind == "history":
            from hedge_pipeline.stages.market_data.sources.history import EMBEDDED, HistorySource

            if not self.history:
                raise ValueError(
                    "the history source needs HEDGE_HISTORY: a CSV or Parquet path, or one of "
                    + ", ".join(EMBEDDED)
                )
            return HistorySource(
                self.history, self.history_symbol, weeks=self.history_weeks, bad_rows=self.bad_rows
            )
        raise ValueError(f"unknown source {self.kind!r}; expected one of {SOURCE_KINDS}")

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> ChainSourceResource:
        settings = settings or Settings.from_env()
        if settings.source == "history":
            return cls(
                kind=settings.source,
                history=settings.history,
                history_symbol=settings.history_symbol,
                history_weeks=settings.history_weeks,
                bad_rows=settings.bad_rows,
            )
        if settings.source != "alpaca":
            return cls(kind=settings.source, seed=settings.synthetic_seed)
        return cls(
            kind=settings.source,
            alpaca_api_key=dg.EnvVar("ALPACA_API_KEY"),
            alpaca_secret_key=dg.EnvVar("ALPACA_SECRET_KEY"),
            alpaca_symbols=list(settings.alpaca_symbols),
        )


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file; connections wait for the file lock and always close."""

    path: str = Field(description="path of the DuckDB file")

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(Path(self.path), read_only=read_only) as con:
            yield con

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> WarehouseResource:
        settings = settings or Settings.from_env()
        return cls(path=str(paths.warehouse_path(settings.data_dir)))


class DataQualityResource(dg.ConfigurableResource):
    """What counts as bad data, and what to do with it (see ``stages.market_data.validation``)."""

    bad_rows: str = Field(default="reject", description="reject | quarantine")
    iv_solve_rate_floor: float = Field(default=0.95, ge=0.0, le=1.0)
    max_arbitrage_violation_rate: float = Field(default=0.01, ge=0.0, le=1.0)

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> DataQualityResource:
        return cls(bad_rows=(settings or Settings.from_env()).bad_rows)


class ProfileResource(dg.ConfigurableResource):
    """Which profile sizes the training stages (``hedge_pipeline.runtime.profiles``)."""

    name: str = Field(default="default", description="smoke | default | full")

    def get(self) -> Profile:
        return get_profile(self.name)

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> ProfileResource:
        return cls(name=get_profile((settings or Settings.from_env()).profile).name)


def resources_from_env(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """The shared resources, from one reading of the environment (a bad variable fails here)."""
    settings = settings or Settings.from_env()
    return {
        "profile": ProfileResource.from_env(settings),
        "launcher": TrainingLauncher.from_env(settings),
        "source": ChainSourceResource.from_env(settings),
        "warehouse_db": WarehouseResource.from_env(settings),
        "quality_policy": DataQualityResource.from_env(settings),
    }
