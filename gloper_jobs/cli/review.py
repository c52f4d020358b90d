"""``gloper review JOB``: the local web page where a person settles each species' reading."""

from __future__ import annotations

import getpass

import click

from gloper_jobs.cli.common import load_settings, open_store


@click.command()
@click.argument("job_id", type=int)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another machine can then open it with the token: prefer an SSH tunnel).")
@click.option("--port", type=int, default=None,
              help="Port (default 8642, or a free one when that is busy; 0: a free one).")
@click.option("--name", "names", multiple=True, metavar="WHO",
              help="Who decides (recorded with each decision); repeat for one URL each (default: your user name).")
@click.option("--photos", type=int, default=None, help="Photos of a species per page (default 8).")
def review(job_id: int, host: str, port: int | None, names: tuple[str, ...], photos: int | None) -> None:
    """Open a local web page to settle which colour is the pattern per species of extract job
    JOB_ID: photos in both readings with every mask, one click per species (re-points its
    photos, nothing runs again), and the decisions saved as a calibration for later jobs."""
    from gloper_jobs import defaults
    from gloper_jobs.review import start_review

    settings = load_settings()
    store = open_store(settings)
    server = start_review(store, job_id, list(names) or [getpass.getuser()], settings.review_cache_dir,
                          host=host, port=port, per_page=photos or defaults.REVIEW_PAGE_PHOTOS)
    click.echo(f"review of job {job_id} (store {store.url}, pictures in {server.review.cache.folder})")
    for who in server.tokens:
        click.echo(f"  {who}: {server.url(who)}")
    click.echo("Ctrl-C stops it (decisions are stored as they are made).", nl=True)
    server.review.repointer.request()  # finishes a re-pointing an earlier run left half done
    server.run()


COMMANDS = [review]
