"""``gloper`` commands about data: ``make-synthetic`` (a small labelled set) and ``db upgrade``
(the result store's schema)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from gloper_jobs.cli.common import load_settings


@click.group()
def db() -> None:
    """The result store."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store's schema to the newest revision."""
    from gloper_jobs.store.db import make_engine, upgrade

    settings = load_settings()
    engine = make_engine(settings.database_url)
    click.echo(f"store at revision {upgrade(engine)}: {engine.url.render_as_string(hide_password=True)}")


@click.command("make-synthetic")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-species", type=int, default=None, help="Photos per pattern kind (default 2).")
@click.option("--seed", type=int, default=None)
@click.option("--polarity", type=click.Choice(["darker", "lighter", "both"]), default=None,
              help="Dark marks on a light coat (default), light marks on a dark coat (<Kind>Light/), or both.")
def make_synthetic(folder: Path, per_species: int | None, seed: int | None, polarity: str | None) -> None:
    """Generate a small labelled pattern set (stripes, spots, rosettes, patches) in FOLDER."""
    from gloper_jobs.data.synthetic import make_dataset

    given: dict[str, Any] = {"per_species": per_species, "seed": seed, "polarity": polarity}
    kwargs = {k: v for k, v in given.items() if v is not None}
    paths = make_dataset(folder, **kwargs)
    click.echo(f"wrote {len(paths)} labelled photos under {folder}")


COMMANDS = [make_synthetic, db]
