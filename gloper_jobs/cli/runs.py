"""``gloper`` commands that run and inspect: run, segment, methods, report, calibrate,
calibration, polarity, jobs, status, export. Each parses, builds the objects, calls one library function, prints.

Options default to None and are dropped, so the library's defaults apply.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gloper_jobs import defaults
from gloper_jobs.cli.common import extension_lines, load_settings, open_store
from gloper_jobs.cli.options import (
    manifest_option,
    method_option,
    no_foreground_option,
    param_option,
    profile_option,
)
from gloper_jobs.cli.options import parse_params as _params

if TYPE_CHECKING:
    pass


@click.command()
@click.argument("dataset")
@method_option
@profile_option
@param_option
@no_foreground_option
@click.option("--retry-failed", is_flag=True, help="Process failed items again.")
@click.option("--limit", type=int, default=None, help="Process at most N pending photos this time.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@manifest_option
@click.option("--upload-results", default=None, metavar="s3://BUCKET/PREFIX",
              help="Mirror the job's mask folder there when the run ends.")
@click.option("--settings-from", "settings_from", type=int, default=None, metavar="CALIBRATION",
              help="Run each photo with its species' calibrated settings, polarity and mask "
                   "(the id `gloper calibrate` printed).")
@click.option("--polarity", default=None, metavar="SPECIES=darker|lighter,...",
              help="Which colour is the pattern for these species, over their photos' vote "
                   "(`gloper polarity JOB` changes it later without re-running).")
@click.option("--write-candidates", type=click.Choice(defaults.WRITE_CANDIDATES_MODES), default=None,
              help="Full-resolution PNGs of the chosen mask only (default; every candidate is also "
                   "stored as an RLE, which exports and reports read) or of all candidates "
                   "(GLOPER_WRITE_CANDIDATES).")
def run(dataset: str, method: str | None, profile: str | None, params: tuple[str, ...], no_foreground: bool,
        retry_failed: bool, limit: int | None, no_progress: bool, manifest: str | None,
        upload_results: str | None, settings_from: int | None, polarity: str | None,
        write_candidates: str | None) -> None:
    """Process every photo under DATASET (a folder or s3://bucket/prefix) on this machine; resumable."""
    from gloper_jobs.devices import passive_openmp

    passive_openmp()  # before torch is imported
    from gloper_jobs.jobs.runner import run_dataset

    settings = load_settings()
    if write_candidates is not None:
        settings = settings.model_copy(update={"write_candidates": write_candidates})
    summary = run_dataset(dataset, method or defaults.DEFAULT_METHOD, settings, profile, _params(params),
                          foreground=not no_foreground, retry_failed=retry_failed, limit=limit,
                          progress=not no_progress, manifest=manifest, settings_from=settings_from,
                          polarity=polarity)
    click.echo(f"job {summary.job.id}: {summary.processed} processed, {summary.n_failed} failed, "
               f"{summary.skipped} already done (store: {settings.database_url})")
    if summary.noticed:
        click.echo("noticed: " + ", ".join(f"{n} {what}" for what, n in summary.noticed.items())
                   + " (listed below, with how to fix them)")
    click.echo(summary.report)
    if upload_results:
        from gloper_jobs.storage import upload_tree

        target = f"{upload_results.rstrip('/')}/{Path(summary.job.results_dir).name}"
        click.echo(f"uploaded {upload_tree(Path(summary.job.results_dir), target)} files to {target}")


@click.command()
@click.argument("image", type=click.Path(path_type=Path))
@method_option
@profile_option
@param_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: <results dir>/segment/<image name>).")
@click.option("--species", default=None, help="Species name, for methods that use it.")
@no_foreground_option
def segment(image: Path, method: str | None, profile: str | None, params: tuple[str, ...],
            out_dir: Path | None, species: str | None, no_foreground: bool) -> None:
    """Segment one photo: writes every candidate mask and an overlay PNG of the choice."""
    from gloper_jobs.jobs.pipeline import segment_image
    from gloper_jobs.store.model_registry import names_a_model

    settings = load_settings()
    out = out_dir or settings.results_dir / "segment" / image.name
    given = _params(params)
    named = names_a_model(str(given.get("model") or ""))  # looked up in the store, opened for it alone
    with open_store(settings).session() if named else nullcontext() as session:
        result = segment_image(image, method or defaults.DEFAULT_METHOD, settings, out, profile, given,
                               species=species, foreground=not no_foreground, session=session)
    for name, path in result.masks.items():
        mark = "  <- choice" if name == result.choice else ""
        click.echo(f"{name}: {path}{mark}")
    click.echo(f"overlay: {result.overlay}")


@click.command()
def methods() -> None:
    """List the registered methods, their parameters and profiles."""
    import dataclasses

    from gloper_jobs.methods.registry import REGISTRY, list_segmenters, load_plugins

    load_plugins(load_settings().plugin_modules)
    for name in list_segmenters():
        cls = REGISTRY[name]
        fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Params))
        click.echo(f"{name}  [{cls.device_class}]  profiles: {', '.join(cls.profiles)}")
        click.echo(f"    {fields}")


@click.command()
@click.argument("job_id", type=int, required=False)
@click.option("--html", "html_out", default=None, metavar="PATH",
              help="Write a self-contained HTML report there (local or s3://) instead of printing.")
def report(job_id: int | None, html_out: str | None) -> None:
    """Print a job's Dice table and failed photos (the newest job by default)."""
    from gloper_jobs.reporting.text import job_report
    from gloper_jobs.store.repository import get_job

    store = open_store(load_settings())
    with store.session() as s:
        job = get_job(s, job_id)
        if html_out is None:
            click.echo(job_report(s, job))
            return
        from gloper_jobs.reporting import write_html_report

        click.echo(f"wrote {write_html_report(s, job, html_out)}")


@click.command()
@click.argument("dataset")
@method_option
@param_option
@click.option("--grid", multiple=True, metavar="NAME=V1,V2",
              help="One axis of the settings tried (default: the method's own; GloPER rho=0.4,0.5,0.6); "
                   "local_sizes alternatives split by ';'.")
@no_foreground_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def calibrate(dataset: str, method: str | None, params: tuple[str, ...], grid: tuple[str, ...],
              no_foreground: bool, no_progress: bool) -> None:
    """Learn per species, from the labelled photos under DATASET, the settings, polarity and mask
    with the best Dice; prints `calibration <id>` last, for `gloper run ... --settings-from <id>`."""
    from gloper_jobs.jobs.calibration import best_settings, format_calibration
    from gloper_jobs.jobs.runner import run_dataset
    from gloper_jobs.store.repository import get_job

    settings = load_settings()
    summary = run_dataset(dataset, method or defaults.DEFAULT_METHOD, settings, None, _params(params),
                          foreground=not no_foreground, progress=not no_progress, kind="calibrate", grid=grid)
    click.echo(f"job {summary.job.id}: {summary.processed} runs, {summary.n_failed} failed, "
               f"{summary.skipped} already done (store: {settings.database_url})")
    if summary.job.status != "done":
        raise click.ClickException(f"calibration job {summary.job.id} did not finish ({summary.job.status}); "
                                   f"run the same command again or see `gloper status {summary.job.id}`")
    store = open_store(settings)
    with store.session() as s:
        learnt = best_settings(s, get_job(s, summary.job.id))
    if not learnt:  # every run failed or no photo was scored: an id to use would mislead
        first = f": {summary.failed[0][0]}: {summary.failed[0][1]}" if summary.failed else ""
        raise click.ClickException(f"calibration job {summary.job.id} scored no photo, nothing was calibrated"
                                   f"{first}; `gloper status {summary.job.id}` lists every failure")
    click.echo(format_calibration(learnt, summary.job.method))
    click.echo(f"calibration {summary.job.id}")


@click.command()
@click.argument("job_id", type=int)
@click.argument("overrides", nargs=-1, metavar="[SPECIES=darker|lighter ...]")
@click.option("--accept-suggestions", is_flag=True,
              help="Settle every species whose photos suggest the other reading to that reading (as you).")
@click.option("--by", "who", default=None, metavar="NAME", help="Who decides (default: your user name).")
def polarity(job_id: int, overrides: tuple[str, ...], accept_suggestions: bool, who: str | None) -> None:
    """Show (and with SPECIES=darker|lighter, settle) which colour is the pattern per species of
    extract job JOB_ID; re-points each photo's chosen mask (nothing runs again) and finishes a
    re-point that was interrupted."""
    import getpass

    from gloper_jobs.jobs.polarity import (
        check_overrides,
        decide_species_polarity,
        format_species_polarity,
        parse_overrides,
    )
    from gloper_jobs.jobs.repointing import pending, repoint
    from gloper_jobs.store.repository import get_job, job_species

    store = open_store(load_settings())
    who = who or getpass.getuser()
    with store.session() as s:
        job = get_job(s, job_id)
        wanted = parse_overrides(overrides)
        check_overrides(wanted, job_species(s, job_id))
        if accept_suggestions:
            calls = (job.species_polarity or {}).get("calls", {})
            wanted = {**{sp: c["suggestion"]["polarity"] for sp, c in calls.items()
                         if c.get("how") == "default" and c.get("suggestion")}, **wanted}
        if wanted or not (job.species_polarity or {}).get("calls"):
            decide_species_polarity(s, job, wanted, who=who)
    with store.session() as s:
        job = get_job(s, job_id)
    if pending(job):
        done = repoint(store, job_id)
        click.echo(f"re-pointed {done.repointed} of {done.items} photos ({done.written} masks written) "
                   f"in {done.seconds:.1f} s")
    with store.session() as s:
        click.echo(format_species_polarity(get_job(s, job_id)))


@click.command()
@click.argument("job_id", type=int)
def calibration(job_id: int) -> None:
    """Print (and store) the best GloPER settings per species of calibration job JOB_ID."""
    from gloper_jobs.jobs.calibration import best_settings, format_calibration
    from gloper_jobs.store.repository import get_job

    store = open_store(load_settings())
    with store.session() as s:
        job = get_job(s, job_id)
        click.echo(format_calibration(best_settings(s, job), job.method))


@click.command()
def jobs() -> None:
    """List the jobs in the store."""
    from gloper_jobs.store.repository import list_jobs, status_counts

    store = open_store(load_settings())
    with store.session() as s:
        listed = list_jobs(s)
        if not listed:
            click.echo(f"no jobs in the store {store.url}: start one with `gloper run DATASET` or `gloper submit`")
        for job in listed:
            counts = status_counts(s, job.id) if job.id else {}
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            click.echo(f"{job.id:>5}  {job.kind:<9} {job.method:<10} {job.status:<9} {summary}  {job.dataset}")


@click.command()
@click.argument("job_id", type=int, required=False)
@click.option("--watch", "watch", type=float, default=None, is_flag=False, flag_value=5.0,
              help="Print again every N seconds (5 by default) until the job is finished.")
def status(job_id: int | None, watch: float | None) -> None:
    """Progress of JOB (the newest by default): counts, photos/h, ETA, workers, latest errors."""
    from gloper_jobs.jobs.progress import format_progress, job_progress
    from gloper_jobs.store import JobStatus
    from gloper_jobs.store.repository import get_job

    settings = load_settings()
    store = open_store(settings)
    while True:
        with store.session() as s:
            p = job_progress(s, get_job(s, job_id), settings.stale_seconds)
        if watch:
            click.clear()
        click.echo(format_progress(p))
        for line in extension_lines("gloper.status", settings):  # the queue's live view, when installed
            click.echo(line)
        if not watch or p.job.status in (JobStatus.done.value, JobStatus.cancelled.value):
            return
        time.sleep(watch)


@click.command()
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(defaults.EXPORT_FORMATS), default="parquet", show_default=True)
@click.option("--out", "out", required=True, metavar="PATH",
              help="File to write (local or s3://bucket/key).")
def export(job_ids: tuple[int, ...], fmt: str, out: str) -> None:
    """Export jobs JOB_IDS: one row per photo (Parquet, CSV) or a COCO JSON of the chosen masks."""
    from gloper_jobs.exports import export_jobs

    store = open_store(load_settings())
    with store.session() as s:
        result = export_jobs(s, job_ids, fmt, out)
    unit = "annotations" if fmt == "coco" else "rows"
    click.echo(f"wrote {result.location}: {result.rows} {unit}, {result.size:,} bytes, {result.seconds:.2f} s")
    if result.problems:
        click.secho(f"{result.problems} mask file(s) could not be read: see the rows' error column", fg="yellow")


COMMANDS = [run, segment, methods, report, calibrate, calibration, polarity, jobs, status, export]
