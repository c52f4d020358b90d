"""The embedded run: a whole dataset on this machine, no broker, resumable.

Interrupt it (Ctrl-C, kill -9) and run it again with the same settings: it
finds the same job (same key), skips done items, redoes the one that was in
flight, and writes no duplicate rows (every write is an upsert on a unique key)
and no half-written files (masks are renamed into place).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from gloper_jobs import defaults
from gloper_jobs.exceptions import TransientError
from gloper_jobs.jobs.context import WorkerContext
from gloper_jobs.jobs.kinds import KINDS, SubmitRequest
from gloper_jobs.jobs.pipeline import ItemOutcome
from gloper_jobs.jobs.recording import (
    ItemFailure,
    ItemResult,
    attempt,
    close_if_drained,
    failure_message,
    finish_drained,
    record_error,
    record_result,
)
from gloper_jobs.scoring.notes import noticed
from gloper_jobs.settings import Settings
from gloper_jobs.store import Item, ItemStatus, Job, Store
from gloper_jobs.store import repository as repo


@dataclass
class RunSummary:
    """What a run did; ``report`` is the printable Dice table and failure list.

    Only counters grow with the archive: ``failed`` keeps the first
    :data:`~gloper_jobs.defaults.RUN_FAILURES_KEPT` failures (path, message) of the
    ``n_failed`` this run had (the store keeps every one: ``gloper export JOB --format csv``).
    """

    job: Job
    created: bool
    processed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    n_failed: int = 0
    skipped: int = 0
    report: str = ""
    #: how many things the job's scan left out and its items' notes noticed, by kind
    #: (:func:`gloper_jobs.scoring.notes.noticed`; the report lists them)
    noticed: dict[str, int] = field(default_factory=dict)

    def add_failure(self, rel_path: str, message: str) -> None:
        self.n_failed += 1
        if len(self.failed) < defaults.RUN_FAILURES_KEPT:
            self.failed.append((rel_path, message))


def run_dataset(
    dataset: Path | str,
    method: str,
    settings: Settings,
    profile: str | None = None,
    params: dict[str, Any] | None = None,
    *,
    foreground: bool = True,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    store: Store | None = None,
    on_item: Callable[[str, str], None] | None = None,
    manifest: str | Path | None = None,
    kind: str = "extract",
    settings_from: int | None = None,
    polarity: str | None = None,
    grid: tuple[str, ...] = (),
    page: int = defaults.RUN_PAGE_ITEMS,
) -> RunSummary:
    """Run ``method`` over every photo under ``dataset`` and record everything in the store.

    ``dataset`` is a folder or an ``s3://`` prefix (copied to ``GLOPER_STAGING_DIR``
    first); a ``manifest`` (see :mod:`gloper_jobs.manifest`) lists the photos instead of a scan.

    The job is recorded as the queue records an extract job; every item runs with
    :func:`~gloper_jobs.jobs.recording.attempt` and is recorded by
    :func:`~gloper_jobs.jobs.recording.record_result`, as in a worker. The pending items
    are read ``page`` at a time (a keyset walk over their ids), so the run's memory does not
    depend on the archive's size.
    :func:`run_photos` photos are processed at once, in threads sharing the cores
    (torch gets cores / photos threads unless ``GLOPER_TORCH_THREADS`` is set); the
    masks are the same as one at a time. A photo that fails becomes a failed item with
    its error and traceback; the run goes on. Returns a :class:`RunSummary` whose ``report`` ends with the failures.

    ``kind="calibrate"`` runs a calibration instead (every ``grid`` setting on every
    labelled photo; the best settings per species are stored when it drains);
    ``settings_from`` runs each photo with its species' calibration; ``polarity``
    (``SPECIES=darker|lighter,...``) overrides those species' vote.
    """
    from gloper_jobs.inputs import stage

    root, origin = stage(dataset, settings)
    photos = run_photos(settings)
    if settings.torch_threads is None:  # the cores shared among the photos in flight
        from gloper_jobs.devices import default_torch_threads

        settings = settings.model_copy(update={"torch_threads": default_torch_threads(photos)})
    ctx = WorkerContext.boot(settings, preload=foreground, store=store)
    extra = {"polarity": polarity} if polarity else {}
    sub = KINDS[kind].record(ctx.store, settings, SubmitRequest(
        root, method, profile, dict(params or {}), foreground, grid=tuple(grid), settings_from=settings_from,
        manifest=str(manifest) if manifest is not None else None, origin=origin, extra=extra))
    job, job_id = sub.job, repo.require_id(sub.job)
    # Parameters that are not part of the job's identity (a device) still apply here.
    # (a calibration's result-determining parameters are those of its grid's settings)
    identity = set(job.params).union(*job.params.get("grid", []))
    ctx.overrides = {k: v for k, v in (params or {}).items() if k not in identity}
    with ctx.store.session() as s:
        # Nothing else runs this job in the embedded mode: in-flight items are stale.
        stale = [ItemStatus.running.value, ItemStatus.queued.value]
        repo.reset_items(s, job_id, stale + ([ItemStatus.failed.value] if retry_failed else []))
        pending = repo.count_with_status(s, job_id, [ItemStatus.pending.value])
    summary = RunSummary(job=job, created=sub.created, skipped=job.n_items - pending)
    todo = pending_items(ctx.store, job_id, page, limit)
    bar = _progress(pending if limit is None else min(pending, limit), f"{method} on {root.name}", progress)
    try:
        for item, result in _run_items(ctx, job, todo, photos):
            if result.status == ItemStatus.failed.value:
                summary.add_failure(item.rel_path, result.message or "")
            else:
                summary.processed += 1
            if on_item:
                on_item(item.rel_path, result.status)
            bar.set_postfix_str(item.rel_path[-40:], refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        with ctx.store.session() as s:
            repo.reset_items(s, job_id, [ItemStatus.running.value])
        raise
    finally:
        bar.close()
        ctx.segmenters.clear()
    with ctx.store.session() as s:
        job = repo.get_job(s, job_id)
        drained = close_if_drained(s, job)  # also closes a rerun that had nothing left to do
    if drained:  # outside that transaction: re-point photos (also one a kill interrupted)
        finish_drained(ctx.store, job)
    with ctx.store.session() as s:
        job = repo.get_job(s, job_id)
        summary.job = job
        from gloper_jobs.reporting.text import (
            job_report,  # the reporting floor: loaded when a run ends
        )

        summary.report = job_report(s, job)
        summary.noticed = noticed(s, job)
    return summary


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="photo", disable=not enabled, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}] {postfix}")


def run_photos(settings: Settings) -> int:
    """Photos an embedded run processes at once: ``GLOPER_RUN_PHOTOS``, else one per core
    (at most :data:`~gloper_jobs.defaults.RUN_PHOTOS_MAX`)."""
    from gloper_jobs.devices import available_cores

    return settings.run_photos or max(1, min(available_cores(), defaults.RUN_PHOTOS_MAX))


def pending_items(store: Store, job_id: int, page: int, limit: int | None = None) -> Iterator[Item]:
    """The job's pending items by id, at most ``limit``, read ``page`` rows at a time, each page
    in a session of its own (:func:`~gloper_jobs.store.repository.pending_page`)."""
    after, left = 0, limit
    while left is None or left > 0:
        with store.session() as s:
            rows = repo.pending_page(s, job_id, after, page if left is None else min(page, left))
        if not rows:
            return
        after = repo.require_id(rows[-1])
        if left is not None:
            left -= len(rows)
        yield from rows


def _run_items(ctx: WorkerContext, job: Job, todo: Iterator[Item],
               photos: int) -> Iterator[tuple[Item, ItemResult]]:
    """Run ``todo`` with ``photos`` items at a time and record each as it finishes.

    The items run in worker threads (:func:`attempt`: decoding, the foreground, the
    method and the mask writes release the GIL, so two photos use two cores); this thread
    marks them running as they start and records every finished one, several in one
    transaction when several are ready. A transient error records its item as pending
    again and stops the run (the items still in flight are reset by the caller's
    interrupt handling or by the next run)."""
    job_id = repo.require_id(job)
    queue = todo
    in_flight: dict[Future[ItemOutcome | ItemFailure], Item] = {}
    pool = ThreadPoolExecutor(max_workers=photos, thread_name_prefix="gloper-item")
    try:
        while True:
            starting = list(islice(queue, photos - len(in_flight)))
            if starting:
                with ctx.store.session() as s:
                    for item in starting:
                        repo.mark_running(s, repo.require_id(item), host=ctx.host)
                for item in starting:
                    in_flight[pool.submit(attempt, ctx, job, item)] = item
            if not in_flight:
                return
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            recorded: list[tuple[Item, ItemResult]] = []
            transient: tuple[Item, BaseException] | None = None
            with ctx.store.session() as s:
                for fut in finished:
                    item = in_flight.pop(fut)
                    try:
                        result = fut.result()
                    except TransientError as exc:
                        transient = (item, exc)
                        record_error(s, repo.require_id(item), "interrupted by a transient error: "
                                     + failure_message(exc), status=ItemStatus.pending.value)
                        continue
                    recorded.append((item, record_result(s, ctx, repo.require_id(item), result)))
                close_if_drained(s, job)
            yield from recorded
            if transient is not None:
                with ctx.store.session() as s:  # the others in flight are abandoned: pending again
                    repo.reset_items(s, job_id, [ItemStatus.running.value])
                raise transient[1]
    finally:
        # on an interrupt, photos already being processed finish in their threads; none starts
        pool.shutdown(wait=False, cancel_futures=True)
