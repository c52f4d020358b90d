"""Publishing items exactly once, and the reconciler that re-publishes lost ones.

This module imports only the store and the settings (never torch, never a
method): a worker's main process runs :func:`reconcile` periodically, and a pool
process forked from a main process that had loaded libtorch inherits a broken
OpenMP state (issue 12, defect 4). ``tests/test_queue_ops.py`` checks it.

- :func:`enqueue_unfinished` publishes through the store's compare-and-set
  (:func:`gloper_jobs.store.deliveries.take_pending`): only the caller that moved
  an item from ``pending`` to ``queued`` sends its message; a failed publish puts
  its batch back to ``pending``.
- :func:`reconcile` re-publishes running items whose heartbeat stopped and queued
  items whose message is stranded (older than ``GLOPER_STRANDED_SECONDS`` and not
  waiting in the broker's queue).
- :class:`BrokerWatch` notices a restarted or emptied broker (its run id changed; a
  queue that should hold messages is empty) and publishes again, within seconds, the
  queued items whose message is neither waiting nor held by a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from itertools import groupby
from typing import Protocol, cast

from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo

log = logging.getLogger(__name__)

#: queued items looked at per reconciler pass (the rest wait for the next pass)
STRANDED_PER_PASS = 1000


class Publisher(Protocol):
    """Publishes one batch of item ids for a job; returns how many were published."""

    def __call__(self, job: Job, item_ids: Sequence[int], /) -> int: ...


def waiting_ids(publish: Publisher, job: Job) -> set[int] | None:
    """Item ids whose message waits in the broker's queue of ``job``, if the publisher can
    tell (``publish.waiting(job)``); None when it cannot."""
    waiting = getattr(publish, "waiting", None)
    return waiting(job) if callable(waiting) else None


def batches(ids: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def enqueue_unfinished(store: Store, job: Job, publish: Publisher, batch: int,
                       include_queued: bool = False) -> int:
    """Publish every pending item of ``job`` in batches; returns how many were published.

    Each batch is first moved to ``queued`` by the store's compare-and-set, then
    published; if the publish fails the batch goes back to ``pending`` and the error
    propagates. ``include_queued`` also re-publishes every queued item (for a broker
    that lost its messages; the reconciler finds stranded ones without it).
    """
    job_id = repo.require_id(job)
    total = 0
    while True:
        with store.session() as s:
            chunk = dl.take_pending(s, job_id, batch)
        if not chunk:
            break
        try:
            total += publish(job, chunk)
        except BaseException:
            with store.session() as s:
                dl.untake(s, chunk)
            raise
    if include_queued:
        total += republish_stranded(store, publish, job_id, older_than=0.0, check_broker=False)
    return total


def republish_stale(store: Store, settings: Settings, publish: Publisher, job_id: int | None = None) -> int:
    """Publish again the running items whose heartbeat stopped (their worker is gone).

    The items are locked while their tasks are published, then marked queued; if
    publishing fails nothing changes and the next pass tries again.
    """
    total = 0
    with store.session() as s:
        stale = dl.lock_stale(s, job_id, settings.stale_seconds)
        for jid, group in groupby(stale, key=lambda it: it.job_id):
            ids = [it.id for it in group if it.id is not None]
            publish(repo.get_job(s, jid), ids)
            total += dl.requeue_stale(s, ids)
    return total


def republish_stranded(store: Store, publish: Publisher, job_id: int | None, older_than: float,
                       check_broker: bool = True) -> int:
    """Publish again the queued items published more than ``older_than`` s ago whose
    message is not waiting in the broker's queue (left in a dead consumer's unacked
    hash, or lost with the broker's data). A message that still exists somewhere
    becomes a duplicate, which the lease drops. Returns how many were published."""
    total = 0
    with store.session() as s:
        candidates = dl.lock_stranded(s, job_id, older_than, STRANDED_PER_PASS)
        for jid, group in groupby(candidates, key=lambda it: it.job_id):
            job = repo.get_job(s, jid)
            ids = [it.id for it in group if it.id is not None]
            waiting = waiting_ids(publish, job) if check_broker else None
            if waiting:
                ids = [i for i in ids if i not in waiting]
            if ids:
                publish(job, ids)
                total += dl.mark_published(s, ids)
    return total


class BrokerProbe(Protocol):
    """What :func:`republish_lost` asks the broker (``workers.publish.CeleryPublisher``)."""

    def broker_id(self) -> str | None:
        """An id that changes whenever the broker restarts (Redis' ``run_id``)."""
        ...

    def queue_length(self, job: Job) -> int:
        """Messages waiting in ``job``'s queue."""
        ...

    def held(self, job: Job) -> set[int]:
        """Item ids of ``job`` whose message is waiting or reserved by a worker (not yet acked)."""
        ...


def republish_lost(store: Store, publish: Publisher, probe: BrokerProbe, older_than: float,
                   restarted: bool, job_id: int | None = None) -> int:
    """Publish again the queued items whose message the broker lost (emptied or restarted).

    A job is looked at when the broker ``restarted`` (its run id changed) or when its
    queue is empty although the store has items of it queued more than ``older_than`` s
    ago (after a restart: every queued item). Of those items, the ones whose message is neither waiting nor held by a worker
    are published again (in batches, until none is left). A message that still exists
    somewhere becomes a duplicate, which the item's lease drops. Returns how many.
    With ``job_id`` only that job is looked at, whether its queue is empty or not (a
    submitter cut off between marking a batch queued and publishing it: ``gloper submit``
    run again publishes what it left, see :func:`republish_unpublished`).
    """
    total = 0
    if restarted:
        older_than = 0.0  # a message published just before the restart is as lost as the others
    with store.session() as s:
        job_ids = dl.jobs_with_queued(s, older_than)
    for jid in job_ids:
        if job_id is not None and jid != job_id:
            continue
        with store.session() as s:
            job = repo.get_job(s, jid)
        if not restarted and job_id is None and probe.queue_length(job) > 0:
            continue
        while True:
            with store.session() as s:
                locked = dl.lock_stranded(s, jid, older_than, STRANDED_PER_PASS)
                held = probe.held(job) if locked else set()
                ids = [it.id for it in locked if it.id is not None and it.id not in held]
                if ids:
                    publish(job, ids)
                    total += dl.mark_published(s, ids)
            if not ids or len(locked) < STRANDED_PER_PASS:
                break
    return total


def republish_unpublished(store: Store, publish: Publisher, job_id: int, older_than: float) -> int:
    """The queued items of job ``job_id`` marked over ``older_than`` s ago whose message is
    neither waiting in the broker nor held by a worker, published again: a ``gloper
    submit`` cut off between marking a batch queued and publishing it (or before it could
    put the batch back to pending) left them so. Needs a publisher that can say what the
    broker holds (``workers.publish.CeleryPublisher``); 0 with any other."""
    if not callable(getattr(publish, "held", None)):
        return 0
    return republish_lost(store, publish, cast(BrokerProbe, publish), older_than, restarted=False, job_id=job_id)


class BrokerWatch:
    """Notices an emptied or restarted broker at once (see :func:`republish_lost`).

    One per worker main process; :meth:`check` runs every ``BROKER_CHECK_SECONDS``
    and remembers the broker's run id between calls.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.last_id: str | None = None

    def check(self, store: Store, publish: Publisher, probe: BrokerProbe) -> int:
        """One look at the broker; returns how many lost items were published again."""
        broker_id = probe.broker_id()
        restarted = self.last_id is not None and broker_id != self.last_id
        if restarted:
            log.warning("the broker restarted (run id %s, was %s): publishing again what it lost",
                        broker_id, self.last_id)
        n = republish_lost(store, publish, probe, self.grace, restarted)
        self.last_id = broker_id  # only once its lost items are published again (else retried)
        if n:
            log.warning("re-published %d queued item(s) the broker had lost", n)
        return n


def reconcile(store: Store, settings: Settings, publish: Publisher, job_id: int | None = None,
              include_stale: bool = True) -> int:
    """The reconciler: re-publish stale running items and stranded queued ones.

    Every worker runs it every ``stale_seconds / 2`` s, and ``gloper resume`` once.
    ``include_stale=False`` leaves running items alone: right after a store outage
    every heartbeat is old although the items are still running. Returns how many
    items were published again.
    """
    stale = republish_stale(store, settings, publish, job_id) if include_stale else 0
    stranded = republish_stranded(store, publish, job_id, settings.stranded_seconds)
    if stranded:
        log.warning("re-published %d queued item(s) whose message was stranded", stranded)
    return stale + stranded
