"""Options shared by the ``gloper`` commands and the commands plugins add (``schedulers``).

Kept apart from :mod:`gloper_jobs.cli.commands`, which loads the plugins when imported,
so a plugin can use them without importing the CLI back.
"""

from __future__ import annotations

from pathlib import Path

import click


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("steps=50", "local_sizes=8,16")`` -> ``{"steps": "50", "local_sizes": "8,16"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. --param steps=50)", param_hint="--param")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


method_option = click.option("--method", "-m", default=None, help="Method name (see `gloper methods`); default gloper.")
profile_option = click.option("--profile", "-p", default=None, help="Parameter profile: cpu (default) or paper.")
param_option = click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                            help="Override one method parameter, e.g. --param steps=50 --param local_sizes=8,16.")
manifest_option = click.option(
    "--manifest", default=None, metavar="FILE.csv|FILE.parquet",
    help="List the photos in a table (column path, relative to DATASET; optional species, identity, "
         "label_path, image_id; a wildlife-datasets metadata table works as it is) instead of scanning. "
         "Local or s3://.")


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
