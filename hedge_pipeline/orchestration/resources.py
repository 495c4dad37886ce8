"""Resources shared by every area: the source of raw chains, the warehouse, quality policy.

Values come from the environment at load time (docs/design.md §4 and §2): ``HEDGE_SOURCE`` picks the
source, ``HEDGE_DATA_DIR`` the warehouse, ``HEDGE_BAD_ROWS`` the bad-row policy. Alpaca keys are
``EnvVar``s, so Dagster resolves them only inside the run and never shows their values.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from hedge_pipeline.orchestration.launcher import TrainingLauncher
from hedge_pipeline.runtime import paths
from hedge_pipeline.runtime.profiles import Profile, get_profile
from hedge_pipeline.stages.market_data.sources.base import ChainSource
from hedge_pipeline.stages.market_data.validation import POLICIES
from hedge_pipeline.tables import warehouse

SOURCE_KINDS = ("synthetic", "files", "alpaca")


class ChainSourceResource(dg.ConfigurableResource):
    """Builds the configured ``ChainSource`` (docs/design.md §4)."""

    kind: str = Field(default="synthetic", description="synthetic | files | alpaca")
    seed: int = Field(default=7, description="seed of the synthetic market generator")
    raw_dir: str | None = Field(default=None, description="root of file drops (files source)")
    alpaca_api_key: str | None = None
    alpaca_secret_key: str | None = None
    alpaca_symbols: list[str] = Field(default_factory=list, description="underlyings (alpaca)")

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
        raise ValueError(f"unknown source {self.kind!r}; expected one of {SOURCE_KINDS}")

    @classmethod
    def from_env(cls) -> ChainSourceResource:
        kind = os.environ.get("HEDGE_SOURCE", "synthetic")
        if kind not in SOURCE_KINDS:
            raise ValueError(f"HEDGE_SOURCE={kind!r}; expected one of {SOURCE_KINDS}")
        if kind != "alpaca":
            return cls(kind=kind, seed=int(os.environ.get("HEDGE_SYNTHETIC_SEED", "7")))
        symbols = [s.strip() for s in os.environ.get("HEDGE_ALPACA_SYMBOLS", "").split(",")]
        return cls(
            kind=kind,
            alpaca_api_key=dg.EnvVar("ALPACA_API_KEY"),
            alpaca_secret_key=dg.EnvVar("ALPACA_SECRET_KEY"),
            alpaca_symbols=[s for s in symbols if s],
        )


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file; connections wait for the file lock and always close."""

    path: str = Field(description="path of the DuckDB file")

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        with warehouse.connect(Path(self.path), read_only=read_only) as con:
            yield con

    @classmethod
    def from_env(cls) -> WarehouseResource:
        return cls(path=str(paths.warehouse_path()))


class DataQualityResource(dg.ConfigurableResource):
    """What counts as bad data, and what to do with it (see ``stages.market_data.validation``)."""

    bad_rows: str = Field(default="reject", description="reject | quarantine")
    iv_solve_rate_floor: float = Field(default=0.95, ge=0.0, le=1.0)
    max_arbitrage_violation_rate: float = Field(default=0.01, ge=0.0, le=1.0)

    @classmethod
    def from_env(cls) -> DataQualityResource:
        policy = os.environ.get("HEDGE_BAD_ROWS", "reject")
        if policy not in POLICIES:
            raise ValueError(f"HEDGE_BAD_ROWS={policy!r}; expected one of {POLICIES}")
        return cls(bad_rows=policy)


class ProfileResource(dg.ConfigurableResource):
    """Which profile sizes the training stages (``hedge_pipeline.runtime.profiles``)."""

    name: str = Field(default="default", description="smoke | default | full")

    def get(self) -> Profile:
        return get_profile(self.name)

    @classmethod
    def from_env(cls) -> ProfileResource:
        return cls(name=get_profile().name)


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "profile": ProfileResource.from_env(),
        "launcher": TrainingLauncher(devices=int(os.environ.get("HEDGE_DEVICES", "1"))),
        "source": ChainSourceResource.from_env(),
        "warehouse_db": WarehouseResource.from_env(),
        "quality_policy": DataQualityResource.from_env(),
    }
