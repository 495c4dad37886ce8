"""Start ``hedge ui`` (webserver + daemon) on a free loopback port for the end-to-end tests.

The server is the real command users run, on its own data directory, in its own session and
process group. Stopping sends SIGTERM to the command alone, as a process manager would, and
waits for every process of the group (webserver, daemon, code servers, run workers) to exit;
whatever is left after the grace period is killed, so a failed test never leaves servers
behind. ``stopped_cleanly`` says whether SIGTERM alone was enough.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from hedge_pipeline.cli.ui_client import UIClient, UIError
from hedge_pipeline.runtime import paths

HEDGE = str(Path(sys.executable).with_name("hedge"))


def run_hedge(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The ``hedge`` command with ``args`` in ``env``, run to its end; its output captured."""
    return subprocess.run(
        [HEDGE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


STARTUP_TIMEOUT = 240.0
STOP_GRACE = 90.0

READY = """
{
  workspaceOrError {
    ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a listening TCP socket on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, _, state = line.split()[1:4]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@dataclass
class DagsterUI:
    url: str
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen
    client: UIClient = field(init=False)
    stopped_cleanly: bool | None = None

    def __post_init__(self) -> None:
        self.client = UIClient(self.url)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until the code location is loaded and every required daemon reports healthy."""
        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"hedge ui exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                data = self.client.query(READY)
            except UIError as exc:
                last = str(exc)
            else:
                entries = data["workspaceOrError"].get("locationEntries") or []
                loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
                errors = [
                    e["locationOrLoadError"].get("message")
                    for e in loaded
                    if e["locationOrLoadError"]["__typename"] == "PythonError"
                ]
                if errors:
                    raise RuntimeError(f"code location failed to load: {errors[0]}")
                daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
                sick = [d["daemonType"] for d in daemons if d["required"] and not d["healthy"]]
                if loaded and not sick:
                    return
                last = f"location loaded: {bool(loaded)}; daemons not healthy yet: {sick}"
            time.sleep(1.0)
        raise TimeoutError(f"hedge ui not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def stop(self, grace: float = STOP_GRACE) -> None:
        pgid = self.process.pid  # the session leader: its pid is the group id
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.5)
        self.stopped_cleanly = not group_alive(pgid)
        if not self.stopped_cleanly:
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _reset_signals() -> None:
    # pytest may run with SIGINT ignored (a background job); the server must get the defaults.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def plain_dagster_env(data_dir: Path) -> dict[str, str]:
    """What a user with nothing set has when running plain ``DAGSTER_HOME=$PWD dagster dev``
    from the repository root: a PATH and a home, and ``HEDGE_DATA_DIR`` only so that a test
    does not share the repository's ``data/``."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DAGSTER_HOME": str(paths.REPO_ROOT),
        "HEDGE_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def running_ui(
    data_dir: Path, env: Mapping[str, str] | None = None, *, plain: bool = False
) -> Iterator[DagsterUI]:
    """``hedge ui`` on a free port of 127.0.0.1 for ``data_dir``, smoke profile; stopped after.
    ``plain``: Dagster's own ``dagster dev -w workspace.yaml`` instead, from the repository
    root in :func:`plain_dagster_env` (plus ``env``)."""
    port = free_port()
    log_path = data_dir.parent / f"hedge-ui-{port}.log"
    if plain:
        full_env = {**plain_dagster_env(data_dir), **(env or {})}
        dagster = str(Path(sys.executable).with_name("dagster"))
        command = [dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    else:
        full_env = {
            **os.environ,
            **paths.instance_env(data_dir),
            "HEDGE_PROFILE": "smoke",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        command = [HEDGE, "ui", "--port", str(port)]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=paths.REPO_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_reset_signals,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", port, data_dir, log_path, process)
    try:
        ui.wait_ready()
        print(f"hedge ui at {ui.url}, log {log_path}")
        yield ui
    finally:
        ui.stop()
