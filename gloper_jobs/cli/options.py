"""Options shared by the ``gloper`` commands, and the click options of the job kinds' own
``gloper submit KIND`` options (:class:`~gloper_jobs.jobs.kinds.base.SubmitOption`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gloper_jobs.jobs.kinds.base import MANIFEST, SubmitOption


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("steps=50", "local_sizes=8,16")`` -> ``{"steps": "50", "local_sizes": "8,16"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. --param steps=50)", param_hint="--param")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _click_settings(option: SubmitOption) -> dict[str, Any]:
    """A kind's submit option as click's keyword arguments (default None: left out of the request)."""
    return {"type": option.type, "multiple": option.multiple, "metavar": option.metavar, "help": option.help,
            "default": None}


def kind_option(option: SubmitOption, hidden: bool = False) -> click.Option:
    """The click option of a job kind's submit option."""
    return click.Option([option.flag, option.name], hidden=hidden, **_click_settings(option))


def option_decorator(option: SubmitOption) -> Callable[[Any], Any]:
    """:func:`kind_option` as a decorator, for commands other than ``submit``."""
    return click.option(option.flag, option.name, **_click_settings(option))


method_option = click.option("--method", "-m", default=None, help="Method name (see `gloper methods`); default gloper.")
profile_option = click.option("--profile", "-p", default=None, help="Parameter profile: cpu (default) or paper.")
param_option = click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                            help="Override one method parameter, e.g. --param steps=50 --param local_sizes=8,16.")
no_foreground_option = click.option("--no-foreground", is_flag=True,
                                    help="Use the whole frame instead of rembg masks.")
manifest_option = option_decorator(MANIFEST)


class DatasetLocation(click.ParamType):
    """A dataset argument: an existing folder (a :class:`~pathlib.Path`) or an ``s3://`` prefix (kept as text)."""

    name = "FOLDER|s3://BUCKET/PREFIX"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        from gloper_jobs.exceptions import StorageError
        from gloper_jobs.storage import is_url

        text = str(value)
        try:
            if is_url(text):
                return text
        except StorageError as exc:
            self.fail(str(exc), param, ctx)
        return click.Path(exists=True, file_okay=False, path_type=Path).convert(text, param, ctx)


dataset_location = DatasetLocation()
