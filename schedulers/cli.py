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

from gloper_jobs.cli.options import (
    dataset_location,
    manifest_option,
    method_option,
    param_option,
    profile_option,
)
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


def _ready(settings: Any) -> None:
    """The [queue] extra is installed and the broker answers: checked before any write."""
    from schedulers.preflight import check_broker

    check_broker(settings.broker_url, ssl_ca=str(settings.broker_ssl_ca) if settings.broker_ssl_ca else None)


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
@click.argument("dataset", type=dataset_location)
@method_option
@profile_option
@param_option
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2",
              help="train: one axis of the GloPER settings grid, e.g. --grid size=128,256 --grid steps=25,50 "
                   "--grid local_sizes=8,16;16,32 (local_sizes alternatives split by ';').")
@click.option("--model", "model", default=None, metavar="NAME",
              help="train: train one dataset-level GloPER model NAME on every photo (no labels) instead of a "
                   "calibration sweep; extract with it by --param model=NAME.")
@click.option("--settings-from", type=int, default=None, metavar="JOB",
              help="extract: run each photo with its species' best GloPER settings from training job JOB.")
@click.option("--no-foreground", is_flag=True, help="Use the whole frame instead of rembg masks.")
@click.option("--device-class", type=click.Choice(["cpu", "gpu"]), default=None,
              help="Send the items to cpu or gpu workers (default: the method's own class).")
@click.option("--priority", type=click.Choice(["urgent", "normal", "bulk"]), default=None,
              help="Queue level (default normal, or the job's own when submitted again): a worker takes "
                   "urgent items first, then normal, then bulk.")
@manifest_option
def submit(kind: str, dataset: str | Path, method: str | None, profile: str | None, params: tuple[str, ...],
           grid: tuple[str, ...], model: str | None, settings_from: int | None, no_foreground: bool,
           device_class: str | None, priority: str | None, manifest: str | None) -> None:
    from gloper_jobs import defaults
    from gloper_jobs.jobs.kinds import SubmitRequest
    from gloper_jobs.jobs.submission import submit as submit_job
    from gloper_jobs.methods.registry import load_plugins

    settings = _settings()
    _ready(settings)
    load_plugins(settings.plugin_modules)
    t0 = time.perf_counter()
    request = SubmitRequest(dataset, method or defaults.DEFAULT_METHOD, profile, _params(params),
                            foreground=not no_foreground, on_device=device_class, grid=grid,
                            settings_from=settings_from, model=model, manifest=manifest)
    sub = submit_job(_store(settings), settings, kind, request, _publisher(settings), priority)
    for line in sub.skipped:
        click.echo(f"skipped {line}", err=True)
    state = "new job" if sub.created else "existing job"
    click.echo(f"job {sub.job.id} ({state}): {sub.job.n_items} items, {sub.added} new, {sub.enqueued} enqueued "
               f"on {sub.job.queue} ({sub.job.priority}) in {time.perf_counter() - t0:.1f} s")
    click.echo(sub.job.id)


@commands.command()
@click.argument("job_id", type=int)
@click.option("--include-queued", is_flag=True,
              help="Re-enqueue every queued item, even those whose message still waits in the broker.")
@click.option("--uncancel", is_flag=True, help="Resume a cancelled job: its cancelled items run again.")
def resume(job_id: int, include_queued: bool, uncancel: bool) -> None:
    """Re-enqueue JOB's pending items, its stale ones (running, but no heartbeat) and its queued
    ones whose message is gone from the broker."""
    from gloper_jobs.jobs.submission import resume_job

    settings = _settings()
    _ready(settings)
    sub = resume_job(_store(settings), settings, job_id, _publisher(settings), include_queued, uncancel)
    click.echo(f"job {job_id}: {sub.requeued_stale} stale items re-enqueued, {sub.enqueued} enqueued on {sub.job.queue}")


@commands.command("retry-failed")
@click.argument("job_id", type=int)
def retry_failed_cmd(job_id: int) -> None:
    """Put JOB's failed items back on the queue (their delivery counts start again)."""
    from gloper_jobs.jobs.submission import retry_failed

    settings = _settings()
    _ready(settings)
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
        paused = _paused_workers(settings)
        if paused:
            click.echo(f"  paused (outside their --window): {', '.join(paused)}")
        if not watch or p.job.status in (JobStatus.done.value, JobStatus.cancelled.value):
            return
        time.sleep(watch)


def _paused_workers(settings: Any, timeout: float = 1.0) -> list[str]:
    """Workers that answer but consume no queue (outside their ``--window``); [] when the
    broker or the extra is missing (status reads the store, which is what matters)."""
    try:
        from schedulers.preflight import check_broker
        from workers.app import make_app

        check_broker(settings.broker_url, timeout=0.5,  # down: say nothing rather than hang on retries
                     ssl_ca=str(settings.broker_ssl_ca) if settings.broker_ssl_ca else None)
        queues = make_app(settings).control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001 - a live view only; never fail `gloper status` on it
        return []
    return sorted(node for node, qs in queues.items() if not qs)


@commands.command()
@click.option("--gpus", default="all", show_default=True,
              help="all, a list of card indices like 0,2, or cpu.")
@click.option("--concurrency", "-c", type=int, default=None,
              help="Processes of a CPU worker (GPU workers run one per card).")
@click.option("--name", default=None,
              help="Node name prefix (default cpu-<pid> or gpu<k>-<pid> per card: unique on the host).")
@click.option("--queues", "-Q", default=None, help="Comma-separated queues (default: all of the device class).")
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--window", default=None, metavar="HH:MM-HH:MM",
              help="Take items only between these local times, e.g. 20:00-06:00 (GLOPER_WINDOW); outside it "
                   "the item in hand finishes and nothing new is taken.")
def worker(gpus: str, concurrency: int | None, name: str | None, queues: str | None, loglevel: str,
           window: str | None) -> None:
    """Start Celery workers: one per visible card (CUDA_VISIBLE_DEVICES set to it), or CPU ones."""
    from schedulers.preflight import check_queue_extra
    from workers.launcher import plan_workers, run_workers, visible_gpus

    check_queue_extra()
    settings = _settings()
    if window:
        from gloper_jobs.settings import Settings

        settings = Settings.from_env(window=window)  # validated here, not in each worker
    settings.check_visibility_timeout()  # fail here, before any worker starts
    available = [] if gpus == "cpu" else visible_gpus(settings.visible_devices)
    specs = plan_workers(gpus, available, concurrency, name,
                         [q for q in queues.split(",") if q] if queues else None,
                         settings.torch_threads, loglevel, instance=str(os.getpid()))
    for spec in specs:
        if settings.window:
            spec.env["GLOPER_WINDOW"] = settings.window
    sys.exit(run_workers(specs, grace=settings.shutdown_grace,
                         on_stopped=lambda nodes: _release_nodes(settings, nodes)))


def _release_nodes(settings: Any, nodes: list[str]) -> None:
    """After the workers stopped: the items they still held go back to the queue now."""
    import socket

    from gloper_jobs.store import deliveries as dl

    try:
        store = _store(settings)
        with store.session() as s:
            n = sum(dl.release_node(s, node.replace("%h", socket.gethostname()),
                                    "its worker was stopped; back on the queue") for node in nodes)
        if n:
            click.echo(f"{n} item(s) the stopped workers held are back on the queue")
    except Exception as exc:  # noqa: BLE001 - the store is down: the reconciler finds them stale
        click.echo(f"could not give the stopped workers' items back ({exc}); the reconciler will", err=True)


@commands.command()
@click.option("--port", type=int, default=None, help="Port (default GLOPER_FLOWER_PORT, 5555).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Bind address; Flower serves plain HTTP, so put a TLS proxy in front before binding "
                   "another interface.")
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


@commands.command()
@click.option("--port", type=int, default=None, help="Port (default GLOPER_METRICS_PORT, 9808).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Bind address.")
def metrics(port: int | None, address: str) -> None:
    """Serve Prometheus metrics: items per job and status, queue depths (see docs/distributed.md)."""
    from schedulers.metrics import serve

    settings = _settings()
    _ready(settings)
    serve(settings, address, port or settings.metrics_port)
    click.echo(f"metrics on http://{address}:{port or settings.metrics_port}/metrics", err=True)
    while True:
        time.sleep(3600)
