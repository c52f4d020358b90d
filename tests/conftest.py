"""Shared fixtures: example photos, and real Redis / PostgreSQL servers for the queue tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import queue_services as qs

REPO = Path(__file__).resolve().parents[1]


def _env(name: str) -> str | None:
    # Tests read their own switches here; the library reads only gloper_jobs.settings.
    return os.environ.get(name) or None


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The shared example photos (GLOPER_EXAMPLES_DIR or ../shared/datasets/gloper-examples)."""
    candidates = [_env("GLOPER_EXAMPLES_DIR"), REPO.parent / "shared/datasets/gloper-examples",
                  Path("/work/shared/datasets/gloper-examples")]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    pytest.skip("example photos not found: set GLOPER_EXAMPLES_DIR")


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server the tests may create databases on (their own unless told otherwise)."""
    external = _env("GLOPER_TEST_DATABASE_URL")
    if external:
        yield external
        return
    try:
        server = qs.start_postgres()
    except (RuntimeError, OSError, KeyError) as exc:
        pytest.skip(f"cannot start PostgreSQL: {exc}")
    try:
        yield server.admin_url
    finally:
        server.stop()


@pytest.fixture()
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, uniquely named database, dropped afterwards."""
    url, name = qs.create_database(pg_admin_url)
    try:
        yield url
    finally:
        qs.drop_database(pg_admin_url, name)


@pytest.fixture()
def redis_server() -> Iterator[qs.RedisServer]:
    """An own redis-server on a free port (append-only file), stopped and deleted afterwards."""
    try:
        server = qs.start_redis()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot start redis-server: {exc}")
    try:
        yield server
    finally:
        server.stop()
        import shutil

        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture()
def broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """GLOPER_TEST_REDIS_URL (flushed afterwards) or an own redis-server's URL."""
    external = _env("GLOPER_TEST_REDIS_URL")
    if not external:
        yield request.getfixturevalue("redis_server").url
        return
    yield external
    import redis

    redis.Redis.from_url(external).flushdb()
