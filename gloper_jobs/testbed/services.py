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


def wait_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1.0)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@dataclass
class RedisServer:
    """A redis-server on a free port with an append-only file, restartable (same data).

    ``binds`` are the addresses it listens on (the first is :attr:`url`'s) and ``prefix``
    the argv that runs it elsewhere (``ip netns exec gpn-head``: see :mod:`.netns`)."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    binds: tuple[str, ...] = ("127.0.0.1",)
    prefix: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return self.url_at(self.binds[0])

    def url_at(self, address: str) -> str:
        """The broker URL through ``address`` (one of ``binds``)."""
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [*self.prefix, binary, "--port", str(self.port), "--bind", " ".join(self.binds),
             "--protected-mode", "no", "--dir", str(self.workdir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, host=self.binds[0])

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


def start_redis(binds: tuple[str, ...] = ("127.0.0.1",), prefix: tuple[str, ...] = ()) -> RedisServer:
    """A new redis-server listening on ``binds`` (run through ``prefix``, see :class:`RedisServer`)."""
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="gloper-redis-")), binds=binds, prefix=prefix)
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
    """A PostgreSQL cluster in a temp folder (run as the ``postgres`` user when we are root).

    ``listen`` and ``prefix`` as for :class:`RedisServer` (addresses other than loopback
    are trusted in ``pg_hba.conf``: throwaway servers on links a test made)."""

    port: int
    datadir: Path
    bindir: Path
    user: str | None
    listen: tuple[str, ...] = ("127.0.0.1",)
    prefix: tuple[str, ...] = ()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.listen[0]}:{self.port}/postgres"

    def url_at(self, address: str, database: str) -> str:
        """The URL of ``database`` through ``address`` (one of ``listen``)."""
        return f"postgresql://postgres@{address}:{self.port}/{database}"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[bytes]:
        cmd = list(argv)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run([*self.prefix, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        others = [a for a in self.listen if a != "127.0.0.1"]
        if others:
            with (self.datadir / "pg_hba.conf").open("a") as hba:
                hba.writelines(f"host all all {a}/32 trust\n" for a in others)
                hba.write("host all all 10.231.0.0/16 trust\n")  # the clients on those links
        self.resume()

    def resume(self) -> None:
        """Start the (initialised) server again on the same port and data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", "-l", str(self.datadir / "log"),
                  "-o", f"-p {self.port} -k {self.datadir} -c listen_addresses={','.join(self.listen)} -c fsync=off "
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


def start_postgres(listen: tuple[str, ...] = ("127.0.0.1",), prefix: tuple[str, ...] = ()) -> PostgresServer:
    """A new PostgreSQL cluster listening on ``listen`` (see :class:`PostgresServer`)."""
    bindir = _pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="gloper-pg-"))
    user = None
    if os.geteuid() == 0:  # initdb and postgres refuse root
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(free_port(), root / "data", bindir, user, listen=listen, prefix=prefix)
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
