"""Submitting to the queue: record a job through its kind, publish its items, resume, retry.

The broker-facing half (publishing task messages) is a :class:`Publisher` that
``workers.publish`` implements; publishing and the reconciler live in the torch-free
:mod:`gloper_jobs.jobs.publishing`. This module only talks to the store and calls it,
so it is the same whoever enqueues. A job is keyed by kind, dataset, method and
result-determining settings (as in the embedded run): submitting the same thing
again finds the same job and adds no rows.
"""

from __future__ import annotations

from gloper_jobs.defaults import LOST_GRACE_SECONDS
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.jobs.kinds import Submission, SubmitRequest, get_kind
from gloper_jobs.jobs.publishing import (
    Publisher,
    enqueue_unfinished,
    reconcile,
    republish_stale,
    republish_stranded,
    republish_unpublished,
)
from gloper_jobs.jobs.queues import check_priority
from gloper_jobs.jobs.recording import close_if_drained, finish_drained
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, JobStatus, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo

__all__ = ["Publisher", "cancel", "enqueue_unfinished", "reconcile", "resume_job", "retry_failed", "submit"]


def submit(store: Store, settings: Settings, kind: str, request: SubmitRequest,
           publish: Publisher, priority: str | None = None) -> Submission:
    """``gloper submit KIND``: record the job through its kind, then publish what is unfinished.

    ``priority`` (``urgent``, ``normal``, ``bulk``; None keeps the job's) picks the
    queue level its unpublished items go to.
    """
    if priority is not None:
        check_priority(priority)
    sub = get_kind(kind).record(store, settings, request)
    if priority is not None and sub.job.priority != priority:
        with store.session() as s:
            repo.set_priority(s, repo.require_id(sub.job), priority)
        sub.job.priority = priority
    sub.enqueued = enqueue_unfinished(store, sub.job, publish, settings.submit_batch)
    if not sub.created:  # what an earlier submit, cut off mid-publish, marked queued but never sent
        sub.enqueued += republish_unpublished(store, publish, repo.require_id(sub.job), LOST_GRACE_SECONDS)
    return sub


def resume_job(store: Store, settings: Settings, job_id: int, publish: Publisher,
               include_queued: bool = False, uncancel: bool = False) -> Submission:
    """``gloper resume``: reopen the job (a cancelled one only with ``uncancel``), re-enqueue
    its stale running items and its stranded queued ones (the reconciler) and its pending
    ones (and every queued one with ``include_queued``)."""
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
        n = dl.requeue_failed(s, repo.require_id(job))
        dl.reopen_job(s, job)
    sub = Submission(job, False, 0)
    sub.enqueued = enqueue_unfinished(store, job, publish, settings.submit_batch)
    sub.added = n
    _close_if_drained(store, job)
    return sub


def _close_if_drained(store: Store, job: Job) -> None:
    """A reopened job with nothing left to run is done again (no worker would close it)."""
    with store.session() as s:
        drained = close_if_drained(s, job)
        if drained:
            job.status = repo.get_job(s, repo.require_id(job)).status
    if drained:
        finish_drained(store, job)


def cancel(store: Store, job_id: int) -> tuple[Job, int]:
    """``gloper cancel``: the job and its unstarted items become cancelled; returns how many."""
    with store.session() as s:
        job = repo.get_job(s, job_id)
        return job, dl.cancel_job(s, job)
