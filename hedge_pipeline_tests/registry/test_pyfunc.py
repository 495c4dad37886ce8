"""Registered versions as MLflow pyfuncs: their layout, their checksum guard, and the same round
trip against an ``mlflow server`` with artifact proxying, started here on a loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import torch
from mlflow.models import Model

from hedge_pipeline.registry import versions as registry
from hedge_pipeline.registry.artifact import load_weights
from hedge_pipeline.stages.specialists import serving
from hedge_pipeline_tests.registry.served import CODE, register_served, specialist_folder

NAME = f"hedge-specialist-{CODE}"
SERVER_START_S = 120


def test_a_version_is_a_pyfunc_around_the_stages_own_folder(mlflow_client, tmp_path: Path):
    folder = specialist_folder(tmp_path / "stage" / "model")
    version = register_served(mlflow_client, NAME, folder, tmp_path)

    loaded = registry.load_version(mlflow_client, NAME, registry.CANDIDATE)
    # The stage still reads its own folder, unchanged, and the tag is that folder's checksum.
    assert (loaded.directory / registry.WEIGHTS_FILE).read_bytes() == (
        folder / registry.WEIGHTS_FILE
    ).read_bytes()
    assert version.tags["weights_sha256"] == registry.file_sha256(folder / registry.WEIGHTS_FILE)
    wrapper = loaded.directory.parents[1]
    model = Model.load(str(wrapper / registry.MLMODEL_FILE))
    assert model.signature is not None
    assert model.saved_input_example_info is not None
    assert not (wrapper / "python_model.pkl").exists(), "models-from-code: nothing pickled"


def test_tampered_weights_are_refused_by_the_pyfunc_and_the_registry(
    mlflow_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = specialist_folder(tmp_path / "stage" / "model")
    version = register_served(mlflow_client, NAME, folder, tmp_path)
    stored = Path(urlparse(version.source).path)
    weights = registry.stage_folder(stored) / registry.WEIGHTS_FILE
    state = load_weights(folder)
    state = {k: v + 1e-3 for k, v in state.items()}
    torch.save(state, weights)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri())

    with pytest.raises(registry.TamperedArtifactError, match="refusing to load it"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{version.version}")
    with pytest.raises(registry.TamperedArtifactError, match=f"{NAME} version 1"):
        registry.load_version(mlflow_client, NAME, version.version)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server --serve-artifacts`` on a free loopback port, sqlite backend in tmp."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--serve-artifacts"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", (tmp_path / "served-artifacts").as_uri()]
    server = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers go down with it
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "mlflow server did not come up:\n" + (tmp_path / "server.log").read_text()
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_the_round_trip_over_http_through_the_servers_artifact_proxy(
    mlflow_server: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = registry.client()
    folder = specialist_folder(tmp_path / "stage" / "model", hedge_option=True)
    version = register_served(client, NAME, folder, tmp_path, alias=registry.CHAMPION)
    assert version.source.startswith("mlflow-artifacts:/"), version.source

    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    states = serving.load(folder).example()
    states["prev_hedge"] = [0.0, -0.5, 0.25]
    expected = serving.load(folder).predict(states, {})
    assert served.predict(states).equals(expected)
    loaded = registry.load_version(client, NAME, registry.CHAMPION)
    assert loaded.tags["weights_sha256"] == registry.file_sha256(folder / registry.WEIGHTS_FILE)
