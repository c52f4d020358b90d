"""Connecting to the store and migrating it (SQLite by default, PostgreSQL via psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlmodel import Session, create_engine

from gloper_jobs.exceptions import ConfigurationError, StoreUnavailableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Make ``postgresql://`` URLs use psycopg 3 (``postgresql+psycopg://``)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and its folder created."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"GLOPER_DATABASE_URL={url!r} is not a database URL; use e.g. sqlite:///gloper.db "
            "or postgresql://user@host:5432/gloper"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # libpq's timeouts and keepalives (GLOPER_STORE_*, GLOPER_TCP_*); any the URL names wins
    args = {k: v for k, v in _store_network().items() if k not in parsed.query}
    return create_engine(url, pool_pre_ping=True, connect_args=args)


def _store_network() -> dict[str, Any]:
    """The settings' libpq network options (their defaults where the environment is invalid:
    the command that reads the settings reports that itself)."""
    from gloper_jobs.settings import Settings

    try:
        return Settings.from_env().store_connect_args()
    except ConfigurationError:
        return Settings.model_construct().store_connect_args()


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise ConfigurationError("no migrations found in the package")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Apply every pending migration; returns the revision the store is now at."""
    try:
        if current_revision(engine) != head_revision():
            cfg = _alembic_config(engine)
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # Several workers may boot at once: one migrates, the rest wait.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7426339)")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        return head_revision()
    except (OperationalError, SAInterfaceError) as exc:
        raise StoreUnavailableError(unreachable_message(engine, exc)) from exc


def unreachable_message(engine: Engine, exc: BaseException) -> str:
    safe = engine.url.render_as_string(hide_password=True)
    return (
        f"cannot reach the result store at {safe} ({str(exc).splitlines()[0]}); check that the "
        "database server is running and GLOPER_DATABASE_URL is right"
    )


class Store:
    """The result store: an engine plus sessions; migrated to head on open."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.engine = make_engine(url)
        if migrate:
            upgrade(self.engine)
        elif current_revision_safe(self.engine) != head_revision():
            raise ConfigurationError(
                "the store's schema is not up to date; run `gloper db upgrade`"
            )

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = Session(self.engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except (OperationalError, SAInterfaceError) as exc:
            session.rollback()
            raise StoreUnavailableError(unreachable_message(self.engine, exc)) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def current_revision_safe(engine: Engine) -> str | None:
    try:
        return current_revision(engine)
    except (OperationalError, SAInterfaceError) as exc:
        raise StoreUnavailableError(unreachable_message(engine, exc)) from exc
