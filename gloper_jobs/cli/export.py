"""``gloper export``: a job's results as Parquet, COCO JSON or CSV (thin: parse, call, print)."""

from __future__ import annotations

import click

from gloper_jobs import defaults


@click.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(defaults.EXPORT_FORMATS), default="parquet", show_default=True)
@click.option("--out", "out", required=True, metavar="PATH",
              help="File to write (local or s3://bucket/key).")
def export(job_ids: tuple[int, ...], fmt: str, out: str) -> None:
    """Export jobs JOB_IDS: one row per photo (Parquet, CSV) or a COCO JSON of the chosen masks."""
    from gloper_jobs.exports import export_jobs
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store

    store = Store(Settings.from_env().database_url)
    with store.session() as s:
        result = export_jobs(s, job_ids, fmt, out)
    unit = "annotations" if fmt == "coco" else "rows"
    click.echo(f"wrote {result.location}: {result.rows} {unit}, {result.size:,} bytes, {result.seconds:.2f} s")
    if result.problems:
        click.secho(f"{result.problems} mask file(s) could not be read: see the rows' error column", fg="yellow")
