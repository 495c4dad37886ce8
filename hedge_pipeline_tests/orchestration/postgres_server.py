"""A throwaway PostgreSQL server for the tests: a cluster of its own in a temporary directory,
on a free loopback port, with a password, stopped and deleted afterwards.

A real server, not a mock, because what is tested is Dagster's own Postgres storage (its
migrations, its event-log watcher, the run and partition tables) as ``dagster.yaml`` builds it.
The binaries are Debian's (``/usr/lib/postgresql/<version>/bin``; ``.ci/run`` installs the
``postgresql`` package where they are missing), else ``initdb`` and ``pg_ctl`` on ``PATH``.
PostgreSQL refuses to run as root: as root, the cluster's directory is handed to the
``postgres`` system user (which the Debian package creates) and every server command runs as
that user through ``runuser``; as anyone else, directly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2

from hedge_pipeline_tests.e2e.dagster_ui import free_port

__all__ = ["PostgresServer", "postgres_bin_dir", "throwaway_postgres"]

HOST = "127.0.0.1"
SUPERUSER = "hedge"
# Durability is worth nothing in a cluster deleted after the tests; without it they run faster.
NO_DURABILITY = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def postgres_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest version, else the one on
    ``PATH``; ``None`` if this machine has no PostgreSQL server."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its superuser ``hedge`` logs in with ``password`` over TCP."""

    port: int
    password: str

    def url(self, database: str) -> str:
        """The ``postgresql://`` URL of ``database`` on this server, password included."""
        password = quote(self.password, safe="")
        return f"postgresql://{SUPERUSER}:{password}@{HOST}:{self.port}/{database}"

    def query(self, database: str, sql: str) -> list[tuple]:
        """The rows of ``sql`` on ``database``, in autocommit (``CREATE DATABASE`` needs it)."""
        connection = psycopg2.connect(
            host=HOST, port=self.port, user=SUPERUSER, password=self.password, dbname=database
        )
        connection.autocommit = True
        with closing(connection), connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def new_database(self) -> str:
        """The name of a new, empty database: one per test, so that no test sees another's runs."""
        name = f"dagster_{uuid.uuid4().hex[:12]}"
        self.query("postgres", f"CREATE DATABASE {name}")
        return name


@contextmanager
def throwaway_postgres(bin_dir: Path, password: str) -> Iterator[PostgresServer]:
    """A new cluster under a temporary directory, started on a free port of 127.0.0.1 (its
    Unix socket in that directory, not the system's), for the block; then stopped, whatever
    the block raised, and deleted."""
    base = Path(tempfile.mkdtemp(prefix="hedge-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(base, pwd.getpwnam("postgres").pw_uid, -1)
    cluster, log = base / "cluster", base / "server.log"

    def run(*command: str | Path) -> None:
        done = subprocess.run(
            [*as_user, *map(str, command)],
            cwd=base,  # the postgres user may not read the caller's working directory
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout}{done.stderr}{tail}")

    password_file = base / "password"
    password_file.write_text(password)
    if as_user:
        shutil.chown(password_file, user="postgres")
    server = PostgresServer(free_port(), password)
    initdb = [f"--pwfile={password_file}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C"]
    options = ["-h", HOST, "-p", str(server.port), "-k", str(base), *NO_DURABILITY]
    try:
        run(bin_dir / "initdb", "-D", cluster, "-U", SUPERUSER, *initdb, "--no-sync")
        password_file.unlink()
        run(bin_dir / "pg_ctl", "-D", cluster, "-l", log, "-w", "-o", " ".join(options), "start")
        yield server
    finally:
        try:
            if (cluster / "postmaster.pid").exists():
                run(bin_dir / "pg_ctl", "-D", cluster, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(base, ignore_errors=True)
