"""TLS to the broker (``rediss://`` with a verified certificate) and PostgreSQL's ``sslmode``
reach the clients (issue 12, defect 8): a real TLS redis-server with a throwaway CA."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gloper_jobs.exceptions import BrokerUnavailableError, StoreUnavailableError
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, Store
from gloper_jobs.testbed.services import free_port, wait_port
from schedulers.preflight import check_broker

pytestmark = pytest.mark.queue


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture()
def tls_redis(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A redis-server speaking only TLS with a certificate from a throwaway CA: (URL, CA file)."""
    if shutil.which("openssl") is None or shutil.which("redis-server") is None:
        pytest.skip("openssl or redis-server missing")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "1", "-subj", "/CN=gloper test CA", cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=tmp_path)
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "1", "-extfile", "san.cnf", cwd=tmp_path)
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
                             "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--save", ""],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        try:
            wait_port(port, timeout=5)
        except TimeoutError:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            pytest.skip(f"this redis-server does not speak TLS: {out[-300:]}")
        yield f"rediss://127.0.0.1:{port}/0", tmp_path / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_rediss_broker_is_verified_and_carries_the_tasks(tls_redis: tuple[str, Path]) -> None:
    import redis

    from workers.app import make_app
    from workers.publish import CeleryPublisher

    url, ca = tls_redis
    check_broker(url, ssl_ca=str(ca))
    with pytest.raises(BrokerUnavailableError, match="does not answer"):
        check_broker(url)  # the system's CAs do not know this server: refused, not trusted blindly
    settings = Settings.from_env(broker_url=url, broker_ssl_ca=ca)
    job = Job(id=7, key="k", kind="extract", dataset="d", method="m", results_dir="", queue="extract.cpu")
    assert CeleryPublisher(make_app(settings))(job, [1, 2]) == 2
    client = redis.Redis.from_url(url, ssl_ca_certs=str(ca), ssl_cert_reqs="required")
    assert client.llen("extract.cpu") == 2


def test_postgres_sslmode_reaches_the_driver(database_url: str) -> None:
    Store(f"{database_url}?sslmode=disable").dispose()
    with pytest.raises(StoreUnavailableError, match="SSL|ssl"):
        Store(f"{database_url}?sslmode=require")  # the test server has no TLS: the driver refuses


def test_placeholder_secrets_are_refused() -> None:
    from gloper_jobs.exceptions import ConfigurationError

    for name, value in (("database_url", "postgresql://gloper:change-me@db/gloper"),
                        ("broker_url", "redis://:change-me@redis:6379/0"), ("flower_password", "change-me")):
        with pytest.raises(ConfigurationError, match="placeholder"):
            Settings.from_env(**{name: value})
    Settings.from_env(broker_url="redis://:9f2c81d0a7@redis:6379/0")
