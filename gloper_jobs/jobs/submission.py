"""Submitting to the queue: record a job through its kind, publish its items, resume, retry.

The broker-facing half (publishing task messages) is a :data:`Publisher` that
``workers.publish`` implements; this module only talks to the store and calls it,
so it is the same whoever enqueues. A job is keyed by kind, dataset, method and
result-determining settings (as in the embedded run): submitting the same thing
again finds the same job and adds no rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from gloper_jobs.jobs.kinds import Submission, SubmitRequest, get_kind
from gloper_jobs.jobs.recording import close_if_drained
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo

#: publishes one batch of item ids for a job; returns how many were published
Publisher = Callable[[Job, Sequence[int]], int]


def submit(store: Store, settings: Settings, kind: str, request: SubmitRequest,
           publish: Publisher) -> Submission:
    """``gloper submit KIND``: record the job through its kind, then publish what is unfinished."""
    sub = get_kind(kind).record(store, settings, request)
    sub.enqueued = enqueue_unfinished(store, sub.job, publish, settings.submit_batch)
    return sub


def batches(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def enqueue_unfinished(store: Store, job: Job, publish: Publisher, batch: int,
                       include_queued: bool = False) -> int:
    """Publish every pending item of ``job`` in batches, marking each batch queued after
    its publish; returns how many were published. ``include_queued`` also republishes
    queued items (for a broker that lost its messages)."""
    with store.session() as s:
        ids = dl.ids_to_enqueue(s, repo.require_id(job), include_queued)
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
        if close_if_drained(s, job):
            job.status = repo.get_job(s, repo.require_id(job)).status


def cancel(store: Store, job_id: int) -> tuple[Job, int]:
    """``gloper cancel``: the job and its unstarted items become cancelled; returns how many."""
    with store.session() as s:
        job = repo.get_job(s, job_id)
        return job, dl.cancel_job(s, job)
