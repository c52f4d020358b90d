"""Recording a job and its items for the queue, and handing out the ids to enqueue.

The broker-facing half (publishing task messages) lives in ``schedulers``; this
half only talks to the store, so it is the same whoever enqueues. A job is keyed
by kind, dataset, method and result-determining settings (as in the embedded
run): submitting the same thing again finds the same job and adds no rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlmodel import select

from gloper_jobs.exceptions import DatasetError, InvalidParameterError, JobNotFoundError
from gloper_jobs.methods.registry import get_segmenter_class
from gloper_jobs.queues import queue_name
from gloper_jobs.runner import build_segmenter
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, JobKind, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo


@dataclass
class Submission:
    """A recorded job: whether it is new, how many items it has and how many were enqueued."""

    job: Job
    created: bool
    added: int
    enqueued: int = 0
    requeued_stale: int = 0


#: publishes one batch of item ids for a job; returns how many were published
Publisher = Callable[[Job, Sequence[int]], int]


def device_class(method: str) -> str:
    """``cpu`` or ``gpu``: which queues a method's items go to by default."""
    return get_segmenter_class(method).device_class


def record_extract_job(store: Store, settings: Settings, dataset: Path, method: str,
                       profile: str | None = None, params: dict[str, Any] | None = None,
                       foreground: bool = True, on_device: str | None = None,
                       settings_from: int | None = None, manifest: str | Path | None = None) -> Submission:
    """Scan ``dataset`` and record the extract job and its items (idempotent).

    Its items go to ``extract.<device class>``: the method's own class, or
    ``on_device`` (``cpu`` sends GloPER to CPU workers).
    The method is built once here to validate its parameters and compute the job's
    identity; it loads no weights. A ``manifest`` lists the photos (checked before
    anything is written). With ``settings_from`` (a finished training job),
    each photo runs with its species' calibrated GloPER settings. Raises
    :class:`DatasetError` for an empty folder.
    """
    from gloper_jobs.inputs import resolve_inputs

    inputs = resolve_inputs(dataset, settings, manifest, lazy=True, allow_url=False)
    spec = replace(_extract_spec(settings, dataset, method, profile, params, foreground), source=inputs.source)
    if settings_from is not None:
        from gloper_jobs.calibration import PER_SPECIES, SETTINGS_FROM, TRAIN_METHOD, calibration_of

        if method != TRAIN_METHOD:
            raise InvalidParameterError(f"--settings-from calibrates {TRAIN_METHOD} only, not {method}")
        with store.session() as s:
            per_species = calibration_of(s, settings_from)
        spec = replace(spec, params={**spec.params, SETTINGS_FROM: settings_from, PER_SPECIES: per_species})
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        added = repo.add_items(s, job, inputs.items, batch=settings.submit_batch)
        if job.n_items == 0:
            raise DatasetError(f"no photos under {dataset}; see `gloper run --help` for the layouts")
        job.queue = queue_name(job.kind, on_device or device_class(method))
        dl.reopen_job(s, job)
    return Submission(job, created, added)


def record_evaluate_job(store: Store, settings: Settings, dataset: Path, method: str,
                        profile: str | None = None, params: dict[str, Any] | None = None,
                        foreground: bool = True, manifest: str | Path | None = None) -> Submission:
    """Record an evaluate job over the extract job with these settings (and ``manifest``) (idempotent).

    Its items are the extract job's labelled, finished photos; they go to
    ``evaluate.cpu``. Raises :class:`JobNotFoundError` when no such extract job exists.
    """
    from gloper_jobs.datasets import DatasetItem
    from gloper_jobs.evaluation import labelled_done_items
    from gloper_jobs.inputs import resolve_inputs

    listed = resolve_inputs(dataset, settings, manifest, lazy=True, allow_url=False).source
    extract = replace(_extract_spec(settings, dataset, method, profile, params, foreground), source=listed)
    with store.session() as s:
        source = s.exec(select(Job).where(Job.key == extract.key)).first()
        if source is None or source.id is None:
            raise JobNotFoundError(
                f"no extract job of {method} with these settings on {dataset}: submit it first with "
                "`gloper submit extract` (same --method, --profile and --param)")
        spec = replace(extract, kind=JobKind.evaluate.value, params={**extract.params, "source_job": source.id})
        job, created = repo.get_or_create_job(s, spec)
        todo = [DatasetItem(i.rel_path, Path(i.path), i.species, Path(i.label_path) if i.label_path else None)
                for i in labelled_done_items(s, source.id)]
        added = repo.add_items(s, job, todo, batch=settings.submit_batch)
        job.results_dir = source.results_dir  # the masks it scores
        job.queue = queue_name(job.kind, "cpu")
        dl.reopen_job(s, job)
    return Submission(job, created, added)


def record_train_job(store: Store, settings: Settings, dataset: Path, grid: list[dict[str, Any]],
                     foreground: bool = True, on_device: str | None = None) -> Submission:
    """Record a training (calibration) job: every labelled photo x every setting of ``grid``
    (from :func:`gloper_jobs.calibration.parse_grid`), one item each (idempotent).

    Its items go to ``train.<device class>`` (GloPER's ``gpu``, or ``on_device``).
    Raises :class:`DatasetError` when the dataset has no labelled photo.
    """
    from gloper_jobs.calibration import TRAIN_METHOD, train_items, train_spec

    spec = train_spec(_extract_spec(settings, dataset, TRAIN_METHOD, None, None, foreground), grid)
    items = train_items(Path(dataset), len(grid))
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        added = repo.add_items(s, job, items, batch=settings.submit_batch)
        job.queue = queue_name(job.kind, on_device or device_class(TRAIN_METHOD))
        dl.reopen_job(s, job)
    return Submission(job, created, added)


def _extract_spec(settings: Settings, dataset: Path, method: str, profile: str | None,
                  params: dict[str, Any] | None, foreground: bool) -> repo.JobSpec:
    segmenter = build_segmenter(method, settings, profile, params)
    return repo.JobSpec(
        kind=JobKind.extract.value, dataset=str(Path(dataset).resolve()), method=method,
        params=segmenter.params.identity(), profile=profile,
        foreground_model=settings.foreground_model if foreground else "none",
        eval_size=settings.eval_size, results_root=str(settings.results_dir.resolve()),
    )


def batches(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def enqueue_unfinished(store: Store, job: Job, publish: Publisher, batch: int,
                       include_queued: bool = False) -> int:
    """Publish every pending item of ``job`` in batches, marking each batch queued after
    its publish; returns how many were published. ``include_queued`` also republishes
    queued items (for a broker that lost its messages)."""
    if job.id is None:
        raise ValueError("job has no id")
    with store.session() as s:
        ids = dl.ids_to_enqueue(s, job.id, include_queued)
    total = 0
    for chunk in batches(ids, batch):
        total += publish(job, chunk)
        with store.session() as s:
            dl.mark_queued(s, chunk)
    return total


def reconcile(store: Store, settings: Settings, publish: Publisher, job_id: int | None = None) -> int:
    """The reconciler: publish again the running items whose heartbeat stopped.

    Every worker runs it periodically, and ``gloper resume`` once. The items are
    locked while their tasks are published, then marked queued; if publishing
    fails nothing changes and the next pass tries again. Returns how many.
    """
    from itertools import groupby

    total = 0
    with store.session() as s:
        stale = dl.lock_stale(s, job_id, settings.stale_seconds)
        for jid, group in groupby(stale, key=lambda it: it.job_id):
            ids = [it.id for it in group if it.id is not None]
            job = repo.get_job(s, jid)
            publish(job, ids)
            total += dl.requeue_stale(s, ids)
    return total


def resume_job(store: Store, settings: Settings, job_id: int, publish: Publisher,
               include_queued: bool = False) -> Submission:
    """``gloper resume``: reopen the job, re-enqueue its stale items (the reconciler) and
    its pending ones (and queued ones with ``include_queued``)."""
    with store.session() as s:
        job = repo.get_job(s, job_id)
        dl.reopen_job(s, job)
    sub = Submission(job, False, 0)
    sub.requeued_stale = reconcile(store, settings, publish, job_id)
    sub.enqueued = enqueue_unfinished(store, job, publish, settings.submit_batch, include_queued)
    _close_if_drained(store, job)
    return sub


def retry_failed(store: Store, settings: Settings, job_id: int, publish: Publisher) -> Submission:
    """``gloper retry-failed``: failed items back to pending (delivery count reset), enqueued."""
    with store.session() as s:
        job = repo.get_job(s, job_id)
        n = dl.requeue_failed(s, job.id or 0)
        dl.reopen_job(s, job)
    sub = Submission(job, False, 0)
    sub.enqueued = enqueue_unfinished(store, job, publish, settings.submit_batch)
    sub.added = n
    _close_if_drained(store, job)
    return sub


def _close_if_drained(store: Store, job: Job) -> None:
    """A reopened job with nothing left to run is done again (no worker would close it)."""
    with store.session() as s:
        if dl.finish_job_if_drained(s, job.id or 0):
            job.status = repo.get_job(s, job.id).status
            if job.kind == JobKind.train.value:
                from gloper_jobs.calibration import best_settings

                best_settings(s, job)


def cancel(store: Store, job_id: int) -> tuple[Job, int]:
    """``gloper cancel``: the job and its unstarted items become cancelled; returns how many."""
    with store.session() as s:
        job = repo.get_job(s, job_id)
        return job, dl.cancel_job(s, job)
