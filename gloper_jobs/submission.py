"""Recording a job and its items for the queue, and handing out the ids to enqueue.

The broker-facing half (publishing task messages) lives in ``schedulers``; this
half only talks to the store, so it is the same whoever enqueues. A job is keyed
by kind, dataset, method and result-determining settings (as in the embedded
run): submitting the same thing again finds the same job and adds no rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlmodel import select

from gloper_jobs.datasets import iter_dataset
from gloper_jobs.exceptions import DatasetError, InvalidParameterError, JobNotFoundError
from gloper_jobs.methods.registry import get_segmenter_class
from gloper_jobs.publishing import (
    Publisher,
    enqueue_unfinished,
    reconcile,
    republish_stale,
    republish_stranded,
)
from gloper_jobs.queues import queue_name
from gloper_jobs.runner import build_segmenter
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, JobKind, JobStatus, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo

__all__ = ["Publisher", "Submission", "cancel", "enqueue_unfinished", "reconcile", "record_evaluate_job",
           "record_extract_job", "record_train_job", "resume_job", "retry_failed"]


@dataclass
class Submission:
    """A recorded job: whether it is new, how many items it has and how many were enqueued."""

    job: Job
    created: bool
    added: int
    enqueued: int = 0
    requeued_stale: int = 0


def device_class(method: str) -> str:
    """``cpu`` or ``gpu``: which queues a method's items go to by default."""
    return get_segmenter_class(method).device_class


def record_extract_job(store: Store, settings: Settings, dataset: Path, method: str,
                       profile: str | None = None, params: dict[str, Any] | None = None,
                       foreground: bool = True, on_device: str | None = None,
                       settings_from: int | None = None) -> Submission:
    """Scan ``dataset`` and record the extract job and its items (idempotent).

    Its items go to ``extract.<device class>``: the method's own class, or
    ``on_device`` (``cpu`` sends GloPER to CPU workers).
    The method is built once here to validate its parameters and compute the job's
    identity; it loads no weights. With ``settings_from`` (a finished training job),
    each photo runs with its species' calibrated GloPER settings. Raises
    :class:`DatasetError` for an empty folder.
    """
    spec = _extract_spec(settings, dataset, method, profile, params, foreground)
    if settings_from is not None:
        from gloper_jobs.calibration import PER_SPECIES, SETTINGS_FROM, TRAIN_METHOD, calibration_of

        if method != TRAIN_METHOD:
            raise InvalidParameterError(f"--settings-from calibrates {TRAIN_METHOD} only, not {method}")
        with store.session() as s:
            per_species = calibration_of(s, settings_from)
        spec = replace(spec, params={**spec.params, SETTINGS_FROM: settings_from, PER_SPECIES: per_species})
    items = iter_dataset(Path(dataset))
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        added = repo.add_items(s, job, items, batch=settings.submit_batch)
        if job.n_items == 0:
            raise DatasetError(f"no photos under {dataset}; see `gloper run --help` for the layouts")
        job.queue = queue_name(job.kind, on_device or device_class(method))
        dl.reopen_job(s, job)
    return Submission(job, created, added)


def record_evaluate_job(store: Store, settings: Settings, dataset: Path, method: str,
                        profile: str | None = None, params: dict[str, Any] | None = None,
                        foreground: bool = True) -> Submission:
    """Record an evaluate job over the extract job with these settings (idempotent).

    Its items are the extract job's labelled, finished photos; they go to
    ``evaluate.cpu``. Raises :class:`JobNotFoundError` when no such extract job exists.
    """
    from gloper_jobs.datasets import DatasetItem
    from gloper_jobs.evaluation import labelled_done_items

    extract = _extract_spec(settings, dataset, method, profile, params, foreground)
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


def resume_job(store: Store, settings: Settings, job_id: int, publish: Publisher,
               include_queued: bool = False, uncancel: bool = False) -> Submission:
    """``gloper resume``: reopen the job, re-enqueue its stale running items and its
    stranded queued ones (the reconciler) and its pending ones (and every queued one
    with ``include_queued``)."""
    with store.session() as s:
        job = repo.get_job(s, job_id)
        if job.status == JobStatus.cancelled.value and not uncancel:
            raise InvalidParameterError(
                f"job {job_id} was cancelled; `gloper resume {job_id} --uncancel` runs its cancelled items again")
        dl.reopen_job(s, job)
    sub = Submission(job, False, 0)
    # an operator asked: every queued item whose message is not waiting in the broker goes again
    sub.requeued_stale = (republish_stale(store, settings, publish, job_id)
                          + republish_stranded(store, publish, job_id, older_than=0.0))
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
