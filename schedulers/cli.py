"""``gloper`` commands of the queue and its workers: submit, resume, retry-failed, cancel,
worker, flower, metrics. Each parses, builds the objects, calls one function, prints.

They join the ``gloper`` group through the entry point group ``gloper.commands``
(pyproject.toml), so ``gloper_jobs`` never imports this package: the dependency runs one
way, from here into the library. ``gloper status`` shows :func:`status_lines` through
``gloper.status``.

``gloper submit KIND`` has one subcommand per registered job kind
(:data:`gloper_jobs.jobs.kinds.KINDS`), with the kind's own options: a new kind needs
no edit here. Celery and the ``workers``/``schedulers`` packages are imported inside
the commands, after :func:`require_queue_extra`: without the ``[queue]`` extra a
command says how to install it, and ``gloper_jobs`` never imports Celery.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gloper_jobs import defaults
from gloper_jobs.cli.common import load_settings, open_store
from gloper_jobs.cli.options import (
    dataset_location,
    kind_option,
    method_option,
    no_foreground_option,
    param_option,
    profile_option,
)
from gloper_jobs.cli.options import parse_params as _params

if TYPE_CHECKING:
    from gloper_jobs.jobs.kinds import JobKind, SubmitOption
    from gloper_jobs.jobs.publishing import Publisher
    from gloper_jobs.settings import Settings


def require_queue_extra(*modules: str) -> None:
    """Exit with how to install the ``[queue]`` extra unless ``modules`` (Celery and redis-py
    by default) import; checked before anything is written."""
    from schedulers.preflight import check_queue_extra

    check_queue_extra(*modules)


def _ready(settings: Settings) -> None:
    """The [queue] extra is installed and the broker answers: checked before any write."""
    from schedulers.preflight import check_broker

    check_broker(settings.broker_url, ssl_ca=str(settings.broker_ssl_ca) if settings.broker_ssl_ca else None)


def _publisher(settings: Settings) -> Publisher:
    from workers.app import make_app
    from workers.publish import CeleryPublisher

    return CeleryPublisher(make_app(settings))


class _KindsGroup(click.Group):
    """``gloper submit KIND``: one subcommand per registered job kind, made when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from gloper_jobs.jobs.kinds import KINDS

        return list(KINDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from gloper_jobs.jobs.kinds import KINDS

        kind = KINDS.get(cmd_name)
        return _submit_command(kind) if kind is not None else None


@click.group(cls=_KindsGroup, subcommand_metavar="KIND DATASET [OPTIONS]...")
def submit() -> None:
    """Record a job of KIND over DATASET and enqueue its unfinished items; prints the job id.

    Submitting the same dataset and settings again adds no rows and enqueues only what
    is unfinished.
    """


def _all_kind_options() -> list[SubmitOption]:
    from gloper_jobs.jobs.kinds import KINDS

    by_name = {o.name: o for kind in KINDS.values() for o in kind.submit_options}
    return list(by_name.values())


def _submit_command(kind: JobKind) -> click.Command:
    """``gloper submit <kind>``: the options every kind takes, then the kind's own. The other
    kinds' options are accepted but hidden, so passing one says which kind it belongs to."""

    @click.command(kind.name, short_help=kind.summary,
                   help=f"Submit a {kind.name} job over DATASET: {kind.summary}. Prints the job id last.")
    @click.argument("dataset", type=dataset_location)
    @method_option
    @profile_option
    @param_option
    @no_foreground_option
    @click.option("--device-class", type=click.Choice(defaults.DEVICE_CLASSES), default=None,
                  help="Send the items to cpu or gpu workers (default: the method's own class).")
    @click.option("--priority", type=click.Choice(defaults.PRIORITIES), default=None,
                  help="Queue level (default normal, or the job's own when submitted again): a worker takes "
                       "urgent items first, then normal, then bulk.")
    def command(dataset: str | Path, method: str | None, profile: str | None, params: tuple[str, ...],
                no_foreground: bool, device_class: str | None, priority: str | None, **options: Any) -> None:
        _submit(kind.name, dataset, method, profile, params, no_foreground, device_class, priority, options)

    for option in _all_kind_options():
        command.params.append(kind_option(option, hidden=option.name not in kind.options))
    return command


def _submit(kind_name: str, dataset: str | Path, method: str | None, profile: str | None, params: tuple[str, ...],
            no_foreground: bool, device_class: str | None, priority: str | None, options: dict[str, Any]) -> None:
    from gloper_jobs.jobs.kinds import SubmitRequest, get_kind
    from gloper_jobs.jobs.kinds.base import KIND_OPTION_FIELDS
    from gloper_jobs.jobs.submission import submit as submit_job
    from gloper_jobs.methods.registry import load_plugins

    given = {k: v for k, v in options.items() if v not in (None, ())}
    request = SubmitRequest(dataset, method or defaults.DEFAULT_METHOD, profile, _params(params),
                            foreground=not no_foreground, on_device=device_class,
                            extra={k: v for k, v in given.items() if k not in KIND_OPTION_FIELDS},
                            **{k: v for k, v in given.items() if k in KIND_OPTION_FIELDS})
    get_kind(kind_name).check_request(request)  # a wrong or missing option: say so before the broker
    settings = load_settings()
    _ready(settings)
    load_plugins(settings.plugin_modules)
    t0 = time.perf_counter()
    sub = submit_job(open_store(settings), settings, kind_name, request, _publisher(settings), priority)
    for line in sub.skipped:
        click.echo(f"skipped {line}", err=True)
    state = "new job" if sub.created else "existing job"
    click.echo(f"job {sub.job.id} ({state}): {sub.job.n_items} items, {sub.added} new, {sub.enqueued} enqueued "
               f"on {sub.job.queue} ({sub.job.priority}) in {time.perf_counter() - t0:.1f} s")
    click.echo(sub.job.id)


@click.command()
@click.argument("job_id", type=int)
@click.option("--include-queued", is_flag=True,
              help="Re-enqueue every queued item, even those whose message still waits in the broker.")
@click.option("--uncancel", is_flag=True, help="Resume a cancelled job: its cancelled items run again.")
def resume(job_id: int, include_queued: bool, uncancel: bool) -> None:
    """Re-enqueue JOB's pending items, its stale ones (running, but no heartbeat) and its queued
    ones whose message is gone from the broker."""
    from gloper_jobs.jobs.submission import resume_job

    settings = load_settings()
    _ready(settings)
    sub = resume_job(open_store(settings), settings, job_id, _publisher(settings), include_queued, uncancel)
    click.echo(f"job {job_id}: {sub.requeued_stale} stale items re-enqueued, {sub.enqueued} enqueued on {sub.job.queue}")


@click.command("retry-failed")
@click.argument("job_id", type=int)
def retry_failed_cmd(job_id: int) -> None:
    """Put JOB's failed items back on the queue (their delivery counts start again)."""
    from gloper_jobs.jobs.submission import retry_failed

    settings = load_settings()
    _ready(settings)
    sub = retry_failed(open_store(settings), settings, job_id, _publisher(settings))
    click.echo(f"job {job_id}: {sub.added} failed items reset, {sub.enqueued} enqueued on {sub.job.queue}")


@click.command()
@click.argument("job_id", type=int)
def cancel(job_id: int) -> None:
    """Cancel JOB: unstarted items are cancelled and their queued tasks skipped."""
    from gloper_jobs.jobs.submission import cancel as cancel_job

    job, n = cancel_job(open_store(load_settings()), job_id)
    click.echo(f"job {job.id} cancelled: {n} items will not run (running ones finish)")


@click.command()
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
    require_queue_extra()
    from gloper_jobs.jobs.kinds import check_time_limits
    from workers.launcher import plan_workers, run_workers, visible_gpus

    settings = load_settings(window=window)  # a --window is validated here, not in each worker
    check_time_limits(settings)  # fail here, before any worker starts
    available = [] if gpus == "cpu" else visible_gpus(settings.visible_devices)
    specs = plan_workers(gpus, available, concurrency, name,
                         [q for q in queues.split(",") if q] if queues else None,
                         settings.torch_threads, loglevel, instance=str(os.getpid()))
    for spec in specs:
        if settings.window:
            spec.env["GLOPER_WINDOW"] = settings.window
    sys.exit(run_workers(specs, grace=settings.shutdown_grace,
                         on_stopped=lambda nodes: _release_nodes(settings, nodes)))


def _release_nodes(settings: Settings, nodes: list[str]) -> None:
    """After the workers stopped: the items they still held go back to the queue now."""
    import socket

    from gloper_jobs.store import deliveries as dl

    try:
        store = open_store(settings)
        with store.session() as s:
            n = sum(dl.release_node(s, node.replace("%h", socket.gethostname()),
                                    "its worker was stopped; back on the queue") for node in nodes)
        if n:
            click.echo(f"{n} item(s) the stopped workers held are back on the queue")
    except Exception as exc:  # noqa: BLE001 - the store is down: the reconciler finds them stale
        click.echo(f"could not give the stopped workers' items back ({exc}); the reconciler will", err=True)


@click.command()
@click.option("--port", type=int, default=None, help="Port (default GLOPER_FLOWER_PORT, 5555).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Bind address; Flower serves plain HTTP, so put a TLS proxy in front before binding "
                   "another interface.")
def flower(port: int | None, address: str) -> None:
    """Start Flower on the broker, behind basic auth (GLOPER_FLOWER_USER / GLOPER_FLOWER_PASSWORD)."""
    from gloper_jobs.exceptions import ConfigurationError

    require_queue_extra("celery", "flower")
    settings = load_settings()
    if not settings.flower_password:
        raise ConfigurationError("set GLOPER_FLOWER_PASSWORD: Flower is never started without basic auth")
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--port={port or settings.flower_port}", f"--address={address}"]
    # Through the environment, not argv: `ps` shows argv to every user of the node.
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"{settings.flower_user}:{settings.flower_password}"}
    os.execve(sys.executable, argv, env)


@click.command()
@click.option("--port", type=int, default=None, help="Port (default GLOPER_METRICS_PORT, 9808).")
@click.option("--address", default="127.0.0.1", show_default=True, help="Bind address.")
def metrics(port: int | None, address: str) -> None:
    """Serve Prometheus metrics: items per job and status, queue depths (see docs/distributed.md)."""
    require_queue_extra("prometheus_client", "redis")
    settings = load_settings()
    _ready(settings)
    from schedulers.metrics import serve

    serve(settings, address, port or settings.metrics_port)
    click.echo(f"metrics on http://{address}:{port or settings.metrics_port}/metrics", err=True)
    while True:
        time.sleep(3600)


def paused_workers(settings: Settings, timeout: float = 1.0) -> list[str]:
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


def status_lines(settings: Settings) -> list[str]:
    """What ``gloper status`` adds from the live queue: the workers paused by their window."""
    paused = paused_workers(settings)
    return [f"  paused (outside their --window): {', '.join(paused)}"] if paused else []


COMMANDS = [submit, resume, retry_failed_cmd, cancel, worker, flower, metrics]
