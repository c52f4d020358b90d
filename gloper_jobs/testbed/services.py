"""Throwaway Redis and PostgreSQL servers from the installed binaries (tests and benchmarks).

Each server gets a free loopback port and a temporary folder: PostgreSQL's ``stop()``
deletes it; Redis's ``stop()`` keeps the append-only file for a restart, ``remove()`` deletes
it. The tests' fixtures (``tests/conftest.py``) and ``bench/services.py`` start and stop them; in
the tests, ``GLOPER_TEST_REDIS_URL`` and ``GLOPER_TEST_DATABASE_URL`` replace them when set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@dataclass
class RedisServer:
    """A redis-server on a free port with an append-only file, restartable (same data)."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the AOF and exits
            self.proc.wait(timeout=20)
        self.proc = None

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def wipe(self) -> None:
        """Delete the (stopped) server's data: append-only files and snapshots."""
        for p in self.workdir.iterdir():
            if p.name != "redis.log":
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    def restart_empty(self, down: float = 0.0) -> None:
        """Stop, delete the data, wait ``down`` s and start again: a Redis that comes back with
        nothing (a pod rescheduled without its volume)."""
        self.stop()
        self.wipe()
        time.sleep(down)
        self.start()


def start_redis() -> RedisServer:
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="gloper-redis-")))
    server.start()
    return server


def _pg_bin() -> Path | None:
    for d in PG_BIN_DIRS:
        if (d / "initdb").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in a temp folder (run as the ``postgres`` user when we are root)."""

    port: int
    datadir: Path
    bindir: Path
    user: str | None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        cmd = list(argv)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        self.resume()

    def resume(self) -> None:
        """Start the (initialised) server again on the same port and data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-l", str(self.datadir / "log"),
                  "-o", f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
                        "-c max_connections=200", "start")

    def halt(self, mode: str = "fast") -> None:
        """Stop the server but keep its data (an outage); :meth:`resume` brings it back."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bindir = _pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="gloper-pg-"))
    user = None
    if os.geteuid() == 0:  # initdb and postgres refuse root
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(free_port(), root / "data", bindir, user)
    server.start()
    return server


def create_database(admin_url: str) -> tuple[str, str]:
    """A uniquely named database on the server of ``admin_url``; returns ``(url, name)``."""
    import psycopg

    name = f"gloper_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_psycopg(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base}/{name}", name


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_psycopg(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _psycopg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")
