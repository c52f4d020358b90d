"""The store's side of a queue: enqueue marks, delivery claims, heartbeats, stale items.

A task message only carries an item id. Whatever a redelivery must know lives
here, in the item row, so it survives any worker:

- :func:`claim` is the one atomic step a worker takes before it starts an item:
  it skips items that are finished, cancelled or failed, counts the delivery
  (``item.deliveries``), and fails the item once it has been delivered more than
  the cap allows without finishing. With ``acks_late`` and
  ``reject_on_worker_lost`` a photo that kills its worker comes back; the count in
  the store ends that loop.
- :func:`beat` writes ``heartbeat_at`` while an item runs; :func:`lock_stale`
  finds running items whose heartbeat stopped (their worker is gone, or its task
  was cancelled when the broker connection dropped) for the reconciler
  (:func:`gloper_jobs.jobs.submission.reconcile`) to enqueue again.
- Results are written by :func:`gloper_jobs.store.repository.record_success`, an
  upsert on ``(item_id, name)``: a redelivered item rewrites its rows, never adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlmodel import Session, col, select

from gloper_jobs.store.models import Item, ItemStatus, Job, JobStatus, utcnow


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (a CursorResult's rowcount; typed loosely by SQLAlchemy)."""
    return int(result.rowcount or 0)


#: statuses a delivered task may start from
STARTABLE = (ItemStatus.pending.value, ItemStatus.queued.value, ItemStatus.running.value)
#: statuses `gloper resume` puts back on the queue (running ones only when stale)
UNFINISHED = (ItemStatus.pending.value, ItemStatus.queued.value)


@dataclass(frozen=True)
class Claim:
    """The outcome of :func:`claim`: ``item`` and ``job`` to work on, or why not (``skipped``)."""

    item: Item | None
    job: Job | None
    skipped: str | None = None
    deliveries: int = 0


def claim(session: Session, item_id: int, *, cap: int, host: str | None, worker: str | None,
          device: str | None = None) -> Claim:
    """Atomically count one delivery of ``item_id`` and mark it running.

    ``cap`` is how many deliveries the item may have had (the store's cap plus the
    task's own retries, which are deliveries that ended cleanly). Returns a
    :class:`Claim` with ``skipped`` set when the item is finished, failed or
    cancelled, when its job is cancelled, or when this delivery exceeds ``cap``
    (the item is then failed, with a message saying so).
    """
    row = session.get(Item, item_id)
    if row is None:
        return Claim(None, None, skipped=f"item {item_id} is not in the store")
    job = session.get(Job, row.job_id)
    if job is None or job.status == JobStatus.cancelled.value:
        session.execute(update(Item).where(col(Item.id) == item_id, col(Item.status).in_(STARTABLE))
                        .values(status=ItemStatus.cancelled.value, finished_at=utcnow()))
        return Claim(row, job, skipped="job cancelled")
    now = utcnow()
    result = session.execute(
        update(Item).where(col(Item.id) == item_id, col(Item.status).in_(STARTABLE)).values(
            status=ItemStatus.running.value, deliveries=Item.deliveries + 1, attempts=Item.attempts + 1,
            started_at=now, heartbeat_at=now, host=host, worker=worker, device=device,
        ).returning(col(Item.deliveries))
    ).first()
    if result is None:
        session.refresh(row)
        return Claim(row, job, skipped=f"item is {row.status}")
    deliveries = int(result[0])
    if deliveries > cap:
        session.execute(update(Item).where(col(Item.id) == item_id).values(
            status=ItemStatus.failed.value, finished_at=now,
            error=(f"delivered {deliveries} times without finishing (cap {cap}): the photo probably "
                   "kills its worker (out of memory, a crash or the hard time limit); check the "
                   "worker logs, then `gloper retry-failed JOB` after fixing the cause"),
            traceback=None,
        ))
        session.refresh(row)
        return Claim(row, job, skipped="delivery cap reached", deliveries=deliveries)
    session.refresh(row)
    return Claim(row, job, deliveries=deliveries)


def release(session: Session, item_id: int, error: str, traceback_text: str | None) -> None:
    """Put a running item back to ``queued`` after a transient error (a retry follows)."""
    session.execute(update(Item).where(col(Item.id) == item_id, col(Item.status) == ItemStatus.running.value)
                    .values(status=ItemStatus.queued.value, error=error, traceback=traceback_text))


def beat(session: Session, item_id: int) -> None:
    """Write a running item's heartbeat."""
    session.execute(update(Item).where(col(Item.id) == item_id, col(Item.status) == ItemStatus.running.value)
                    .values(heartbeat_at=utcnow()))


def ids_to_enqueue(session: Session, job_id: int, include_queued: bool = False) -> list[int]:
    """Ids of the job's pending items (and queued ones, whose messages the broker may have
    lost, when ``include_queued``), in path order."""
    statuses = list(UNFINISHED) if include_queued else [ItemStatus.pending.value]
    rows = session.exec(select(Item.id).where(col(Item.job_id) == job_id, col(Item.status).in_(statuses))
                        .order_by(col(Item.rel_path)))
    return [int(i) for i in rows.all() if i is not None]


def lock_stale(session: Session, job_id: int | None, stale_seconds: float) -> list[Item]:
    """Running items of running jobs (``job_id`` or all) whose heartbeat is older than
    ``stale_seconds``: their worker stopped. Locked for this transaction (other
    reconcilers skip them on PostgreSQL), in path order."""
    stmt = (select(Item).join(Job, col(Job.id) == col(Item.job_id))
            .where(_stale_condition(stale_seconds), col(Job.status) == JobStatus.running.value))
    if job_id is not None:
        stmt = stmt.where(col(Item.job_id) == job_id)
    stmt = stmt.order_by(col(Item.job_id), col(Item.rel_path)).with_for_update(of=Item, skip_locked=True)
    return list(session.exec(stmt).all())


def requeue_stale(session: Session, item_ids: Sequence[int]) -> int:
    """Stale running items whose task was published again become ``queued`` (deliveries kept)."""
    if not item_ids:
        return 0
    result = session.execute(
        update(Item).where(col(Item.id).in_(list(item_ids)), col(Item.status) == ItemStatus.running.value)
        .values(status=ItemStatus.queued.value, heartbeat_at=None),
    )
    return _rowcount(result)


def _stale_condition(stale_seconds: float) -> ColumnElement[bool]:
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    return and_(col(Item.status) == ItemStatus.running.value,
                or_(col(Item.heartbeat_at).is_(None), col(Item.heartbeat_at) < cutoff))


def stale_items(session: Session, job_id: int | None, stale_seconds: float) -> Sequence[Item]:
    """Running items (of ``job_id``, or of every job) whose heartbeat stopped."""
    stmt = select(Item).where(_stale_condition(stale_seconds))
    if job_id is not None:
        stmt = stmt.where(col(Item.job_id) == job_id)
    return session.exec(stmt.order_by(col(Item.id))).all()


def mark_queued(session: Session, item_ids: Sequence[int]) -> int:
    """Mark pending items whose message was published as ``queued``; returns how many.

    Called after the publish, so an item is never ``queued`` without a message; one a
    worker already started (running, done) is left as it is.
    """
    if not item_ids:
        return 0
    result = session.execute(
        update(Item).where(col(Item.id).in_(list(item_ids)), col(Item.status) == ItemStatus.pending.value)
        .values(status=ItemStatus.queued.value),
    )
    return _rowcount(result)


def requeue_failed(session: Session, job_id: int) -> int:
    """Failed items back to pending with their delivery count reset; returns how many."""
    result = session.execute(
        update(Item).where(col(Item.job_id) == job_id, col(Item.status) == ItemStatus.failed.value).values(
            status=ItemStatus.pending.value, deliveries=0, error=None, traceback=None,
            started_at=None, heartbeat_at=None, finished_at=None,
        )
    )
    return _rowcount(result)


def cancel_job(session: Session, job: Job) -> int:
    """Cancel a job: its unstarted items become cancelled (queued messages are then skipped)."""
    job.status = JobStatus.cancelled.value
    job.updated_at = utcnow()
    session.add(job)
    result = session.execute(
        update(Item).where(col(Item.job_id) == job.id, col(Item.status).in_(UNFINISHED))
        .values(status=ItemStatus.cancelled.value, finished_at=utcnow())
    )
    return _rowcount(result)


def reopen_job(session: Session, job: Job) -> None:
    """A cancelled or done job that is submitted or resumed again runs again."""
    if job.status != JobStatus.running.value:
        job.status = JobStatus.running.value
        job.updated_at = utcnow()
        session.add(job)
    session.execute(update(Item).where(col(Item.job_id) == job.id, col(Item.status) == ItemStatus.cancelled.value)
                    .values(status=ItemStatus.pending.value, finished_at=None))


def finish_job_if_drained(session: Session, job_id: int) -> bool:
    """Mark the job done when no item is pending, queued or running; returns whether it is."""
    busy = session.exec(select(Item.id).where(
        col(Item.job_id) == job_id, col(Item.status).in_(STARTABLE)).limit(1)).first()
    if busy is not None:
        return False
    session.execute(update(Job).where(col(Job.id) == job_id, col(Job.status) == JobStatus.running.value)
                    .values(status=JobStatus.done.value, updated_at=utcnow()))
    return True
