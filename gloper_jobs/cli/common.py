"""What every ``gloper`` command module shares: the group that turns library errors into one
line, and the settings and store a command builds from the environment."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from gloper_jobs.exceptions import GloperError

if TYPE_CHECKING:
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store


class GloperGroup(click.Group):
    """Turns the library's errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GloperError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


def load_settings(**overrides: Any) -> Settings:
    """:class:`~gloper_jobs.settings.Settings` from the environment; ``overrides`` (not None) win."""
    from gloper_jobs.settings import Settings

    return Settings.from_env(**overrides)


def open_store(settings: Settings) -> Store:
    """The result store of ``settings`` (migrated to the newest schema)."""
    from gloper_jobs.store import Store

    return Store(settings.database_url)


def extensions(group: str) -> list[Any]:
    """The objects the installed packages register under the entry point ``group``
    (``gloper.commands``: lists of click commands; ``gloper.status``: functions of the
    settings that return lines), in name order. The ``workers``/``schedulers`` side plugs
    in here, so the library never imports it; a package that is not installed adds nothing."""
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group=group), key=lambda ep: ep.name)]


def extension_lines(group: str, settings: Settings) -> list[str]:
    """Every ``group`` extension called with ``settings``, their lines joined."""
    return [line for fn in extensions(group) for line in fn(settings)]
