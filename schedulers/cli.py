"""The distributed commands, added to ``gloper`` through the ``gloper.commands`` entry point.

``submit``, ``resume``, ``retry-failed``, ``cancel``, ``status``, ``worker`` and
``flower``: each parses, builds the objects, calls one function, prints.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from gloper_jobs.cli.options import method_option, param_option, profile_option
from gloper_jobs.cli.options import parse_params as _params


@click.group(name="__root__")
def commands() -> None:
    """Commands whose subcommands join ``gloper`` at top level."""


def _settings() -> Any:
    from gloper_jobs.settings import Settings

    return Settings.from_env()


def _store(settings: Any) -> Any:
    from gloper_jobs.store import Store

    return Store(settings.database_url)


def _publisher(settings: Any) -> Any:
    from workers.app import make_app
    from workers.publish import CeleryPublisher

    return CeleryPublisher(make_app(settings))


def _kind_help() -> str:
    from gloper_jobs.jobs.kinds import KINDS

    return "; ".join(f"{name}: {kind.summary}" for name, kind in KINDS.items())


def _kind_names() -> list[str]:
    from gloper_jobs.jobs.kinds import KINDS

    return list(KINDS)


@commands.command(help=f"""Record a job over DATASET and enqueue its unfinished items; prints the job id.

KIND is one of the registered job kinds ({_kind_help()}). Submitting the same
dataset and settings again adds no rows and enqueues only what is unfinished.""")
@click.argument("kind", type=click.Choice(_kind_names()))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@method_option
@profile_option
@param_option
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2",
              help="train: one axis of the GloPER settings grid, e.g. --grid size=128,256 --grid steps=25,50 "
                   "--grid local_sizes=8,16;16,32 (local_sizes alternatives split by ';').")
@click.option("--settings-from", type=int, default=None, metavar="JOB",
              help="extract: run each photo with its species' best GloPER settings from training job JOB.")
@click.option("--no-foreground", is_flag=True, help="Use the whole frame instead of rembg masks.")
@click.option("--device-class", type=click.Choice(["cpu", "gpu"]), default=None,
              help="Send the items to cpu or gpu workers (default: the method's own class).")
def submit(kind: str, dataset: Path, method: str | None, profile: str | None, params: tuple[str, ...],
           grid: tuple[str, ...], settings_from: int | None, no_foreground: bool, device_class: str | None) -> None:
    from gloper_jobs import defaults
    from gloper_jobs.jobs.kinds import SubmitRequest
    from gloper_jobs.jobs.submission import submit as submit_job
    from gloper_jobs.methods.registry import load_plugins

    settings = _settings()
    load_plugins(settings.plugin_modules)
    t0 = time.perf_counter()
    request = SubmitRequest(dataset, method or defaults.DEFAULT_METHOD, profile, _params(params),
                            foreground=not no_foreground, on_device=device_class, grid=grid,
                            settings_from=settings_from)
    sub = submit_job(_store(settings), settings, kind, request, _publisher(settings))
    state = "new job" if sub.created else "existing job"
    click.echo(f"job {sub.job.id} ({state}): {sub.job.n_items} items, {sub.added} new, {sub.enqueued} enqueued "
               f"on {sub.job.queue} in {time.perf_counter() - t0:.1f} s")
    click.echo(sub.job.id)


@commands.command()
@click.argument("job_id", type=int)
@click.option("--include-queued", is_flag=True,
              help="Also re-enqueue queued items (when the broker lost its messages).")
def resume(job_id: int, include_queued: bool) -> None:
    """Re-enqueue JOB's pending items and its stale ones (running, but no heartbeat)."""
    from gloper_jobs.jobs.submission import resume_job

    settings = _settings()
    sub = resume_job(_store(settings), settings, job_id, _publisher(settings), include_queued)
    click.echo(f"job {job_id}: {sub.requeued_stale} stale items re-enqueued, {sub.enqueued} enqueued on {sub.job.queue}")


@commands.command("retry-failed")
@click.argument("job_id", type=int)
def retry_failed_cmd(job_id: int) -> None:
    """Put JOB's failed items back on the queue (their delivery counts start again)."""
    from gloper_jobs.jobs.submission import retry_failed

    settings = _settings()
    sub = retry_failed(_store(settings), settings, job_id, _publisher(settings))
    click.echo(f"job {job_id}: {sub.added} failed items reset, {sub.enqueued} enqueued on {sub.job.queue}")


@commands.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel JOB: unstarted items are cancelled and their queued tasks skipped."""
    from gloper_jobs.jobs.submission import cancel as cancel_job

    job, n = cancel_job(_store(_settings()), job_id)
    click.echo(f"job {job.id} cancelled: {n} items will not run (running ones finish)")


@commands.command()
@click.argument("job_id", type=int, required=False)
@click.option("--watch", "watch", type=float, default=None, is_flag=False, flag_value=5.0,
              help="Print again every N seconds (5 by default) until the job is finished.")
def status(job_id: int | None, watch: float | None) -> None:
    """Progress of JOB (the newest by default): counts, photos/h, ETA, workers, latest errors."""
    from gloper_jobs.jobs.progress import format_progress, job_progress
    from gloper_jobs.store import JobStatus
    from gloper_jobs.store.repository import get_job

    settings = _settings()
    store = _store(settings)
    while True:
        with store.session() as s:
            p = job_progress(s, get_job(s, job_id), settings.stale_seconds)
        if watch:
            click.clear()
        click.echo(format_progress(p))
        if not watch or p.job.status in (JobStatus.done.value, JobStatus.cancelled.value):
            return
        time.sleep(watch)


@commands.command()
@click.option("--gpus", default="all", show_default=True,
              help="all, a list of card indices like 0,2, or cpu.")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Processes of a CPU worker (GPU workers run one per card).")
@click.option("--name", default=None, help="Node name prefix (default gpu<k> per card, or cpu).")
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (default: all of the device class).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
def worker(gpus: str, concurrency: int | None, name: str | None, queues: str | None, loglevel: str) -> None:
    """Start Celery workers: one per visible card (CUDA_VISIBLE_DEVICES set to it), or CPU ones."""
    from workers.launcher import plan_workers, run_workers, visible_gpus

    settings = _settings()
    settings.check_visibility_timeout()  # fail here, before any worker starts
    available = [] if gpus == "cpu" else visible_gpus(settings.visible_devices)
    specs = plan_workers(gpus, available, concurrency, name,
                         [q for q in queues.split(",") if q] if queues else None,
                         settings.torch_threads, loglevel)
    sys.exit(run_workers(specs))


@commands.command()
@click.option("--port", type=int, default=None, help="Port (default GLOPER_FLOWER_PORT, 5555).")
@click.option("--address", default="0.0.0.0", show_default=True)  # noqa: S104 - a server's bind address
def flower(port: int | None, address: str) -> None:
    """Start Flower on the broker, behind basic auth (GLOPER_FLOWER_USER / GLOPER_FLOWER_PASSWORD)."""
    from gloper_jobs.exceptions import ConfigurationError

    settings = _settings()
    if not settings.flower_password:
        raise ConfigurationError("set GLOPER_FLOWER_PASSWORD: Flower is never started without basic auth")
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--port={port or settings.flower_port}", f"--address={address}"]
    # Through the environment, not argv: `ps` shows argv to every user of the node.
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"{settings.flower_user}:{settings.flower_password}"}
    os.execve(sys.executable, argv, env)
