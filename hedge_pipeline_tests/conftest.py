"""Fixtures shared by the whole suite: an isolated data directory and Dagster instance.

Every test that touches state gets its own ``HEDGE_DATA_DIR`` under pytest's tmp_path, so the
suite never reads or writes the repo's ``data/`` and parallel workers never share a file.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from hedge_pipeline.runtime import paths
from hedge_pipeline.tables.schema import LINEAGE_COLUMNS

# docs/design.md §1's eight assets in lineage order: what the UI must show and every stage counted.
# Written out, not read from the definitions, so that tests compare the code with the design.
DESIGN_ASSETS = (
    "raw_option_chains",
    "greeks_features",
    "portfolio_selection",
    "cnn_lstm_model",
    "specialist_agents",
    "meta_controller",
    "joint_model",
    "hedge_ensemble",
)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "data"
    base.mkdir()
    for key, value in paths.instance_env(base).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HEDGE_SOURCE", raising=False)
    monkeypatch.delenv("HEDGE_BAD_ROWS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # A developer's own Postgres instance storage is not the test's (runs.db is expected).
    monkeypatch.delenv("HEDGE_DAGSTER_POSTGRES_URL", raising=False)
    return base


@pytest.fixture
def instance(data_dir: Path) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def synthetic_code_frame() -> pl.DataFrame:
    """One synthetic weekly code's quotes (canonical columns), generated once per session."""
    from hedge_pipeline.stages.market_data.sources.synthetic import SyntheticSource

    return SyntheticSource().load("3CN5").drop(LINEAGE_COLUMNS)


def write_drop(frame: pl.DataFrame, root: Path, code: str, name: str = "quotes.parquet") -> Path:
    """Write a canonical long-format drop for ``code`` under ``root`` (files source layout)."""
    folder = root / code
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.with_columns(pl.lit(code).alias("weekly_code")).write_parquet(path)
    return path


def small_book(frame: pl.DataFrame, options: int = 6, bars: int = 40) -> pl.DataFrame:
    """A few near-the-money options over the first bars: a valid drop that loads in milliseconds."""
    first_ts = frame["ts"].unique().sort().head(bars)
    atm = (
        frame.filter(pl.col("ts") == first_ts[0])
        .with_columns(dist=(pl.col("strike") - pl.col("underlying_price")).abs())
        .sort("dist", "option_symbol")
        .head(options)["option_symbol"]
    )
    return frame.filter(
        pl.col("option_symbol").is_in(atm.implode()) & pl.col("ts").is_in(first_ts.implode())
    )


@pytest.fixture(scope="session")
def _migrated_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store with its schema in place: migrating a new store takes
    seconds (ten under load), copying this one milliseconds."""
    from mlflow import MlflowClient

    store = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{store}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.search_experiments(max_results=1)
    client.search_registered_models(max_results=1)
    return store


@pytest.fixture
def mlflow_client(data_dir: Path, _migrated_mlflow_store: Path):
    """``registry.client()`` on the test's own data directory, its registry empty."""
    from hedge_pipeline.registry import versions as registry

    paths.mlflow_dir().mkdir(parents=True)
    shutil.copyfile(_migrated_mlflow_store, paths.mlflow_dir() / "mlflow.db")
    return registry.client()


_SESSION_START = time.time()


def pytest_terminal_summary(terminalreporter) -> None:
    """Say where the browser test left its screenshots: it runs in an xdist worker, whose
    prints pytest does not show for a passing test."""
    from hedge_pipeline_tests.e2e.artifacts import browser_artifacts

    out = browser_artifacts()
    shots = [p for p in out.glob("*.png") if p.stat().st_mtime >= _SESSION_START]
    if shots:
        terminalreporter.write_line(f"browser test screenshots ({len(shots)}): {out}")
