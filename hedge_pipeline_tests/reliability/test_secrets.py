"""Fake Alpaca keys reach no store, and ``hedge ui`` listens on loopback only (issue 7, item 5).

Distinctive fake keys are set in the environment of everything the test starts. The smoke lineage
runs through ``hedge run`` (files source, one weekly code, every stage down to the ensemble) and
``hedge evaluate`` fetches its report; the Alpaca source is materialized through Dagster against the
recorded responses of ``stages/market_data/sources/test_alpaca.py`` (its keys wired as in
production, ``dagster.EnvVar``s read by ``ChainSourceResource.from_env``), once for a code it serves
and once for a symbol whose keys Alpaca refuses (HTTP 403, retried, failed). Then ``hedge ui``
starts on the same data directory with the Alpaca source configured, and its daemon ticks the
new-codes sensor (which fails: no symbols, so no network).

Every file under the data directory (warehouse, datasets, MLflow store and artifacts,
checkpoints, reports, Dagster's run and event storage and compute logs) and the UI's log is
searched for each key: as text, and inside base64 at each of the three byte alignments. Files
that compress (zip archives such as torch checkpoints, Parquet, DuckDB, gzip) are searched
after decoding. The run configs and resource values the UI shows are read through its GraphQL
API, and every listening socket of the UI's processes must be a loopback address.
"""

from __future__ import annotations

import base64
import gzip
import io
import ipaddress
import os
import socket
import subprocess
import time
import zipfile
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import requests

from hedge_pipeline.cli import main as cli
from hedge_pipeline.orchestration.resources import (
    ChainSourceResource,
    DataQualityResource,
    WarehouseResource,
)
from hedge_pipeline.runtime import paths
from hedge_pipeline.stages.market_data.assets import greeks_features, raw_option_chains
from hedge_pipeline.stages.market_data.sources.alpaca import AlpacaSource
from hedge_pipeline_tests.conftest import write_drop
from hedge_pipeline_tests.e2e.dagster_ui import HEDGE, running_ui
from hedge_pipeline_tests.stages.market_data.sources.test_alpaca import NOW, RecordedAlpaca

API_KEY = "PKCANARY7Q2W9E4R6T1Y"
SECRET_KEY = "canary-Secret-Zx81Qm3Vt6Yp0Lr5Ks2Hd9FbWq4"
KEYS = {"ALPACA_API_KEY": API_KEY, "ALPACA_SECRET_KEY": SECRET_KEY}
KEYS_FIELDS = {"alpaca_api_key": "ALPACA_API_KEY", "alpaca_secret_key": "ALPACA_SECRET_KEY"}
CODE = "3CN5"
ALPACA_CODE, REFUSED_CODE = "SPY-2026-11-27", "QQQ-2026-11-27"
# Where Dagster writes next to dagster.yaml if an instance path ever escapes the data directory.
REPO_STATE = ("history", "storage", "logs", "schedules", ".logs_queue", "mlruns")

RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status runConfigYaml
  tags { key value } } } } }
"""
RESOURCE = """
query($selector: ResourceSelector!) {
  topLevelResourceDetailsOrError(resourceSelector: $selector) {
    __typename
    ... on ResourceDetails { name configuredValues { key value type } }
  }
}
"""


SENSOR_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 5) { status error { message stack } } } }
  }
}
"""
REPOSITORY = {"repositoryLocationName": "hedge_pipeline", "repositoryName": "__repository__"}


def needles() -> dict[str, bytes]:
    """Each key as text, and the part of its base64 encoding that does not depend on what
    precedes it, for each of the three alignments a key can have inside an encoded blob
    (standard and URL-safe alphabets)."""
    found: dict[str, bytes] = {}
    for label, key in (("API key", API_KEY.encode()), ("secret key", SECRET_KEY.encode())):
        found[label] = key
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + key)
            stable = encoded[-(-8 * offset // 6) : 8 * (offset + len(key)) // 6]
            found[f"{label}, base64 at offset {offset}"] = stable
            found[f"{label}, urlsafe base64 at offset {offset}"] = stable.translate(
                bytes.maketrans(b"+/", b"-_")
            )
    return found


def _decoded(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    """The bytes to search in a file: its own, and what its compressed parts hold."""
    parts = [(str(path), data)]
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts += [(f"{path}!{n}", archive.read(n)) for n in archive.namelist()]
    elif data[:2] == b"\x1f\x8b":
        parts.append((f"{path} (gunzipped)", gzip.decompress(data)))
    elif data[:4] == b"PAR1":
        frame = pl.read_parquet(io.BytesIO(data))
        text = frame.select(pl.all().cast(pl.String)).write_csv() + str(frame.schema)
        parts.append((f"{path} (parquet values)", text.encode()))
    elif path.suffix == ".duckdb":
        parts.append((f"{path} (duckdb values)", _duckdb_text(path)))
    return parts


def _duckdb_text(path: Path) -> bytes:
    """Every value of every table as text: DuckDB compresses strings in its file."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        dumps = [con.sql(f"SELECT * FROM {t}").pl().cast(pl.String).write_csv() for t in tables]
    return "\n".join(dumps).encode()


def leaks(roots: list[Path]) -> list[str]:
    """Where each key shows up (file, or archive member, and the form found)."""
    forms = needles()
    found = []
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            try:
                content = path.read_bytes()
            except FileNotFoundError:  # a shared folder's file that another test removed
                continue
            for where, data in _decoded(path, content):
                found += [f"{where}: {label}" for label, form in forms.items() if form in data]
    return found


def searched_files(root: Path) -> set[str]:
    """The kinds of store the search covered, to show it was not searching an empty tree."""
    top = {p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file()}
    return top | {p.suffix for p in root.rglob("*") if p.is_file()}


class RecordedAlpacaSource(ChainSourceResource):
    """``ChainSourceResource`` whose Alpaca clients are answered by the recordings: the keys
    travel exactly as in production (``from_env``: ``EnvVar`` fields), only HTTP is replaced."""

    def build(self) -> AlpacaSource:
        session = requests.Session()
        session.mount("https://", RecordedAlpaca())
        return AlpacaSource(
            self.alpaca_api_key or "",
            self.alpaca_secret_key or "",
            self.alpaca_symbols,
            session=session,
            clock=lambda: NOW,
        )


def materialize_alpaca(monkeypatch: pytest.MonkeyPatch, symbol: str, code: str):
    monkeypatch.setenv("HEDGE_SOURCE", "alpaca")
    monkeypatch.setenv("HEDGE_ALPACA_SYMBOLS", symbol)
    source = RecordedAlpacaSource.from_env()
    # Wired as in production: the names of the variables, resolved inside the run.
    assert (source.alpaca_api_key, source.alpaca_secret_key) == tuple(KEYS)
    assert isinstance(source.alpaca_api_key, dg.EnvVar)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("weekly_code", [code])
        return dg.materialize(
            [raw_option_chains, greeks_features],
            partition_key=code,
            instance=instance,
            resources={
                "source": source,
                "warehouse_db": WarehouseResource.from_env(),
                "quality_policy": DataQualityResource.from_env(),
            },
            raise_on_error=False,
        )


def listening_sockets(pgid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket (IPv4 and IPv6) of the process group."""
    inodes = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (stat.parent / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != "0A" or fields[9] not in inodes:
                continue
            raw = bytes.fromhex(address)
            # /proc writes each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def test_the_search_finds_keys_however_a_store_holds_them(tmp_path: Path):
    """The search itself: a key in plain text, in base64 at every alignment, deflated in a zip,
    gzipped, in a Parquet file and in a DuckDB table is found, and a clean tree is clean."""
    (tmp_path / "clean.txt").write_text("nothing to see: PKCANARY, canary-Secret")
    assert leaks([tmp_path]) == []
    for offset in range(3):
        blob = base64.b64encode(b"x" * offset + f"{API_KEY}:{SECRET_KEY}".encode() + b"!")
        (tmp_path / f"header{offset}.json").write_bytes(b'{"auth": "' + blob + b'"}')
        urlsafe = base64.urlsafe_b64encode(b"\xff" * offset + SECRET_KEY.encode())
        (tmp_path / f"token{offset}.txt").write_bytes(urlsafe)
    with zipfile.ZipFile(tmp_path / "model.pt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.pkl", f"config {API_KEY} " * 50)
    (tmp_path / "log.gz").write_bytes(gzip.compress(SECRET_KEY.encode() * 20))
    pl.DataFrame({"tag": [API_KEY] * 100}).write_parquet(tmp_path / "data.parquet")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT ? || range AS v FROM range(5000)", [SECRET_KEY])
    found = leaks([tmp_path])
    for name in ("header0", "header1", "header2"):
        assert any(f.startswith(str(tmp_path / f"{name}.json")) and "API key" in f for f in found)
        assert any(name in f and "secret key" in f for f in found)
    for name in ("token0", "token1", "token2"):
        assert any(name in f and "urlsafe" in f for f in found), found
    for where in ("model.pt!data.pkl", "log.gz (gunzipped)", "data.parquet (parquet values)"):
        assert any(f.startswith(str(tmp_path / where)) for f in found), (where, found)
    assert any("warehouse.duckdb (duckdb values): secret key" in f for f in found), found


def wait_for_failed_tick(ui, selector: dict[str, str], timeout: float = 120.0) -> list[dict]:
    """The sensor's ticks once one has failed (its error and traceback are stored)."""
    deadline = time.monotonic() + timeout
    while True:
        data = ui.client.query(SENSOR_TICKS, {"selector": selector})
        ticks = data["sensorOrError"]["sensorState"]["ticks"]
        if any(t["status"] == "FAILURE" for t in ticks):
            return ticks
        assert time.monotonic() < deadline, f"no failed tick: {ticks}\n{ui.log_tail()}"
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.xdist_group("dagster_ui")
def test_fake_alpaca_keys_reach_no_store_and_the_ui_listens_on_loopback(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, synthetic_code_frame
):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    assert cli.build_parser().parse_args(["ui"]).host == "127.0.0.1"

    write_drop(synthetic_code_frame, data_dir / "raw", CODE)
    env = {**os.environ, **paths.instance_env(data_dir), "HEDGE_SOURCE": "files"}
    for command in (["run", "--profile", "smoke"], ["evaluate"]):
        done = subprocess.run(
            [HEDGE, *command], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"hedge {' '.join(command)}:\n{done.stdout}{done.stderr}"
        assert not [f for f in needles().values() if f.decode() in done.stdout + done.stderr]

    served = materialize_alpaca(monkeypatch, "SPY", ALPACA_CODE)
    [stored] = served.asset_materializations_for_node("raw_option_chains")
    assert stored.metadata["dagster/row_count"].value == 7
    refused = materialize_alpaca(monkeypatch, "QQQ", REFUSED_CODE)
    assert not refused.success
    # Three attempts (the asset's RetryPolicy), each error and traceback in the event log.
    attempts = [e.event_specific_data.error for e in refused.all_events if e.is_step_failure]
    attempts += [
        e.event_specific_data.error
        for e in refused.all_events
        if e.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert len(attempts) == 3
    assert all(a.cause.cls_name == "AlpacaSourceError" for a in attempts)
    assert all("HTTP 403" in a.cause.message for a in attempts)

    # The UI's code location wired for Alpaca as in production, but with no symbols: the
    # new-codes sensor then stops at the resource's own check and never reaches the network.
    with running_ui(data_dir, {"HEDGE_SOURCE": "alpaca", "HEDGE_ALPACA_SYMBOLS": ""}) as ui:
        sockets = listening_sockets(ui.process.pid)
        assert ("127.0.0.1", ui.port) in sockets
        exposed = {s for s in sockets if not ipaddress.ip_address(s[0]).is_loopback}
        assert not exposed, f"listening beyond loopback: {exposed}"

        runs = ui.client.query(RUNS)["runsOrError"]["results"]
        # Every run of the test: market data, selection, five training stages, two Alpaca.
        assert len(runs) >= 9, [(r["jobName"], r["status"]) for r in runs]
        assert {ALPACA_CODE, REFUSED_CODE, CODE} <= {
            t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition"
        }
        resource = ui.client.query(RESOURCE, {"selector": {**REPOSITORY, "resourceName": "source"}})
        values = resource["topLevelResourceDetailsOrError"]["configuredValues"]
        shown_keys = {v["key"]: (v["type"], v["value"]) for v in values if v["key"] in KEYS_FIELDS}
        assert shown_keys == {f: ("ENV_VAR", v) for f, v in KEYS_FIELDS.items()}
        sensor = {**REPOSITORY, "sensorName": "new_weekly_codes_sensor"}
        ticks = wait_for_failed_tick(ui, sensor)
        shown = repr(runs) + repr(resource) + repr(ticks)
        assert not [label for label, form in needles().items() if form.decode() in shown]
        ui_log = ui.log_path

    stores = [data_dir, ui_log] + [paths.REPO_ROOT / d for d in REPO_STATE]
    assert not leaks([p for p in stores if p.exists()])
    covered = searched_files(data_dir)
    assert {
        "warehouse.duckdb",
        "dagster",
        "mlflow",
        "checkpoints",
        "datasets",
        "reports",
    } <= covered
    assert {".db", ".parquet", ".pt"} <= covered
