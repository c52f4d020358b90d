"""The store's side of a queue: enqueue marks, delivery claims, heartbeats, stale items.

A task message only carries an item id. Whatever a redelivery must know lives
here, in the item row, so it survives any worker:

- :func:`take_pending` is the publishing compare-and-set: it moves pending items to
  ``queued`` and only its caller publishes them, so concurrent submits, resumes and
  reconcilers never send one item twice.
- :func:`claim` is the one atomic step a worker takes before it starts an item:
  it takes an exclusive lease (owner and expiry in the row), skips items that are
  finished, cancelled or failed, drops a second delivery of an item whose lease is
  live (not run, not counted), counts the delivery (``item.deliveries``), and fails
  the item once it has been delivered more than the cap allows without finishing.
  With ``acks_late`` and ``reject_on_worker_lost`` a photo that kills its worker
  comes back; the count in the store ends that loop.
- :func:`beat` writes ``heartbeat_at`` and extends the lease while an item runs;
  :func:`lock_stale` finds running items whose heartbeat stopped (their worker is
  gone) and :func:`lock_stranded` queued items whose message may be stranded, for
  the reconciler (:func:`gloper_jobs.jobs.publishing.reconcile`) to publish again.
- Results are written by :func:`gloper_jobs.store.repository.record_success`, an
  upsert on ``(item_id, name)``: a redelivered item rewrites its rows, never adds.
- A claimed item's outcome is *fenced* by its :class:`Lease`: the write applies only
  while no later claim took the item (``attempts`` is the lease's epoch: every claim
  counts one). A node cut off past its lease, whose item another node took and
  recorded meanwhile, has its late result dropped (:class:`LeaseLost`), not written
  over the other's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlmodel import Session, col, select

from gloper_jobs.store.models import Item, ItemStatus, Job, JobStatus, utcnow


def _rowcount(result: Any) -> int:
    """Rows an UPDATE changed (a CursorResult's rowcount; typed loosely by SQLAlchemy)."""
    return int(result.rowcount or 0)


#: statuses of an item that is not finished (a job with one is not drained)
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


@dataclass(frozen=True)
class Lease:
    """What a claim holds: its owner (``<node>:<pid>``) and its epoch (the item's
    ``attempts`` after the claim; any later claim, by anyone, counts one more)."""

    owner: str
    epoch: int

    @classmethod
    def of(cls, item: Item) -> Lease | None:
        """The lease a just-claimed ``item`` row holds; None for an unleased one (the embedded run)."""
        return cls(item.lease_owner, item.attempts) if item.lease_owner else None

    def holds(self, item_id: int) -> ColumnElement[bool]:
        """The WHERE clause of a write under this lease: no claim since ours, and the item
        still unfinished (``running``, or ``queued`` again by a reconciler that found our
        heartbeat stale but whose new message nobody has claimed yet)."""
        return and_(col(Item.id) == item_id, col(Item.attempts) == self.epoch,
                    col(Item.status).in_((ItemStatus.running.value, ItemStatus.queued.value)))


class LeaseLost(Exception):  # noqa: N818 - a condition, as StopIteration is
    """A write under a lease that another claim has taken since (raised before anything is
    written; the caller's transaction rolls back)."""

    def __init__(self, item_id: int, lease: Lease) -> None:
        super().__init__(f"item {item_id}: result of {lease.owner} (lease epoch {lease.epoch}) fenced off: "
                         "its lease lapsed and another claim took the item")
        self.item_id, self.lease = item_id, lease


def fenced_update(session: Session, item_id: int, lease: Lease | None, **values: Any) -> None:
    """``UPDATE item SET values`` where ``lease`` still holds (any item when None);
    :class:`LeaseLost` when it does not."""
    where = lease.holds(item_id) if lease is not None else col(Item.id) == item_id
    done = session.execute(update(Item).where(where).values(**values).returning(col(Item.id))).first()
    if done is None and lease is not None:
        raise LeaseLost(item_id, lease)


#: how a worker tells whether a lease's owner process is gone (``<node>:<pid>`` on its host)
OwnerGone = Callable[[Item], bool]


def _lease_free(now: datetime) -> ColumnElement[bool]:
    """An item a delivery may start: not started yet, or running under an expired lease."""
    return or_(col(Item.status).in_(UNFINISHED),
               and_(col(Item.status) == ItemStatus.running.value,
                    or_(col(Item.lease_expires_at).is_(None), col(Item.lease_expires_at) < now)))


def claim(session: Session, item_id: int, *, cap: int, host: str | None, worker: str | None,
          lease_seconds: float, device: str | None = None, owner_gone: OwnerGone | None = None) -> Claim:
    """Atomically take item ``item_id`` under an exclusive lease and count the delivery.

    The lease (``lease_owner`` = ``worker``, ``lease_expires_at`` = now +
    ``lease_seconds``, extended by :func:`beat`) is taken by a compare-and-set: only
    from ``pending``/``queued``, or from ``running`` when the lease has expired or
    ``owner_gone(item)`` says its holder died (a killed pool process on this host).
    A delivery of an item whose lease is live is dropped: ``skipped`` says so and
    ``deliveries`` is not counted, so duplicates never run twice at once nor use up
    the cap. ``cap`` is how many deliveries the item may have had (the store's cap
    plus the task's own retries). Returns a :class:`Claim` with ``skipped`` set when
    the item is finished, failed or cancelled, its job is cancelled, another
    process holds it, or this delivery exceeds ``cap`` (the item is then failed,
    with a message saying so).
    """
    row = session.get(Item, item_id)
    if row is None:
        return Claim(None, None, skipped=f"item {item_id} is not in the store")
    job = session.get(Job, row.job_id)
    if job is None or job.status == JobStatus.cancelled.value:
        session.execute(update(Item).where(col(Item.id) == item_id, col(Item.status).in_(STARTABLE))
                        .values(status=ItemStatus.cancelled.value, finished_at=utcnow()))
        session.refresh(row)
        return Claim(row, job, skipped="job cancelled")
    now = utcnow()
    free = _lease_free(now)
    if worker is not None:  # a retry of this process's own attempt (its release failed: store down)
        free = or_(free, and_(col(Item.status) == ItemStatus.running.value, col(Item.lease_owner) == worker))
    if row.status == ItemStatus.running.value and owner_gone is not None and owner_gone(row):
        # its holder died on this host: take the lease over, but only the lease we saw
        free = or_(free, and_(col(Item.status) == ItemStatus.running.value,
                              col(Item.lease_owner) == row.lease_owner))
    result = session.execute(
        update(Item).where(col(Item.id) == item_id, free).values(
            status=ItemStatus.running.value, deliveries=Item.deliveries + 1, attempts=Item.attempts + 1,
            started_at=now, heartbeat_at=now, host=host, worker=worker, device=device,
            lease_owner=worker, lease_expires_at=now + timedelta(seconds=lease_seconds),
        ).returning(col(Item.deliveries))
    ).first()
    if result is None:
        session.refresh(row)
        if row.status == ItemStatus.running.value:
            return Claim(row, job, skipped=f"running in {row.lease_owner} (live lease): duplicate delivery dropped")
        return Claim(row, job, skipped=f"item is {row.status}")
    deliveries = int(result[0])
    if deliveries > cap:
        session.execute(update(Item).where(col(Item.id) == item_id).values(
            status=ItemStatus.failed.value, finished_at=now, lease_owner=None, lease_expires_at=None,
            error=(f"delivered {deliveries} times without finishing (cap {cap}): the photo probably "
                   "kills its worker (out of memory, a crash or the hard time limit); check the "
                   "worker logs, then `gloper retry-failed JOB` after fixing the cause"),
            traceback=None,
        ))
        session.refresh(row)
        return Claim(row, job, skipped="delivery cap reached", deliveries=deliveries)
    session.refresh(row)
    return Claim(row, job, deliveries=deliveries)


def _held_by(item_id: int, owner: str | None) -> ColumnElement[bool]:
    cond = and_(col(Item.id) == item_id, col(Item.status) == ItemStatus.running.value)
    return and_(cond, col(Item.lease_owner) == owner) if owner is not None else cond


def release(session: Session, item_id: int, error: str, traceback_text: str | None,
            owner: str | None = None) -> None:
    """Put a running item (held by ``owner``) back to ``queued`` after a transient error
    (the task's retry is its new message); the lease ends."""
    session.execute(update(Item).where(_held_by(item_id, owner)).values(
        status=ItemStatus.queued.value, error=error, traceback=traceback_text, queued_at=utcnow(),
        lease_owner=None, lease_expires_at=None))


def release_node(session: Session, node: str, reason: str) -> int:
    """A worker node that stopped gives back the items its processes (``<node>:<pid>``) still
    hold: ``queued`` at once with no publish time, so the reconciler re-publishes any whose
    message is not in the broker; the interrupted delivery is not counted. Returns how many."""
    result = session.execute(update(Item).where(
        col(Item.status) == ItemStatus.running.value, col(Item.lease_owner).startswith(f"{node}:", autoescape=True),
    ).values(status=ItemStatus.queued.value, error=reason, queued_at=None, lease_owner=None,
             lease_expires_at=None, heartbeat_at=None, deliveries=Item.deliveries - 1))
    return _rowcount(result)


def beat(session: Session, item_id: int, owner: str | None = None, lease_seconds: float | None = None) -> bool:
    """Write a running item's heartbeat and extend its lease; returns whether ``owner``
    still holds it (False: the lease expired and another process took the item)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if lease_seconds is not None:
        values["lease_expires_at"] = utcnow() + timedelta(seconds=lease_seconds)
    return _rowcount(session.execute(update(Item).where(_held_by(item_id, owner)).values(**values))) > 0


def take_pending(session: Session, job_id: int, limit: int) -> list[int]:
    """Compare-and-set for publishing: move up to ``limit`` pending items of the job to
    ``queued`` and return their ids (path order). Only the caller that moved an item
    publishes it, so two concurrent submits or resumes never both send one item; on
    PostgreSQL the rows another caller is taking are skipped, not waited for."""
    # A CTE, not an IN (subquery): PostgreSQL may re-run a subquery per outer row,
    # and a re-run LIMIT ... FOR UPDATE SKIP LOCKED would pick every pending item.
    pick = (select(Item.id).where(col(Item.job_id) == job_id, col(Item.status) == ItemStatus.pending.value)
            .order_by(col(Item.rel_path)).limit(limit).with_for_update(skip_locked=True).cte("picked"))
    rows = session.execute(
        update(Item).where(col(Item.id).in_(select(pick.c.id)), col(Item.status) == ItemStatus.pending.value)
        .values(status=ItemStatus.queued.value, queued_at=utcnow()).returning(col(Item.id))
    ).all()
    return sorted(int(r[0]) for r in rows)


def untake(session: Session, item_ids: Sequence[int]) -> int:
    """Undo :func:`take_pending` for items whose publish failed: back to ``pending``."""
    if not item_ids:
        return 0
    return _rowcount(session.execute(
        update(Item).where(col(Item.id).in_(list(item_ids)), col(Item.status) == ItemStatus.queued.value)
        .values(status=ItemStatus.pending.value, queued_at=None)))


def lock_stranded(session: Session, job_id: int | None, older_than: float, limit: int) -> list[Item]:
    """Queued items of jobs not cancelled, published more than ``older_than`` s ago (or never
    marked): their message may be stranded (left in a dead consumer's unacked hash,
    lost with the broker's data). Locked for this transaction, oldest first."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    stmt = (select(Item).join(Job, col(Job.id) == col(Item.job_id))
            .where(col(Item.status) == ItemStatus.queued.value, col(Job.status) != JobStatus.cancelled.value,
                   or_(col(Item.queued_at).is_(None), col(Item.queued_at) < cutoff)))
    if job_id is not None:
        stmt = stmt.where(col(Item.job_id) == job_id)
    stmt = stmt.order_by(col(Item.job_id), col(Item.rel_path)).limit(limit).with_for_update(of=Item, skip_locked=True)
    return list(session.exec(stmt).all())


def jobs_with_queued(session: Session, older_than: float) -> list[int]:
    """Ids of jobs (not cancelled) with a queued item published more than ``older_than`` s
    ago: the jobs whose broker queue should hold a message. Reads, locks nothing."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    stmt = (select(Item.job_id).join(Job, col(Job.id) == col(Item.job_id))
            .where(col(Item.status) == ItemStatus.queued.value, col(Job.status) != JobStatus.cancelled.value,
                   or_(col(Item.queued_at).is_(None), col(Item.queued_at) < cutoff))
            .distinct())
    return sorted(int(j) for j in session.exec(stmt).all() if j is not None)


def mark_published(session: Session, item_ids: Sequence[int]) -> int:
    """Queued items whose message was published again: their ``queued_at`` restarts."""
    if not item_ids:
        return 0
    return _rowcount(session.execute(
        update(Item).where(col(Item.id).in_(list(item_ids)), col(Item.status) == ItemStatus.queued.value)
        .values(queued_at=utcnow())))


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
        .values(status=ItemStatus.queued.value, heartbeat_at=None, queued_at=utcnow(),
                lease_owner=None, lease_expires_at=None),
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


def requeue_failed(session: Session, job_id: int) -> int:
    """Failed items back to pending with their delivery count reset; returns how many."""
    result = session.execute(
        update(Item).where(col(Item.job_id) == job_id, col(Item.status) == ItemStatus.failed.value).values(
            status=ItemStatus.pending.value, deliveries=0, error=None, traceback=None,
            started_at=None, heartbeat_at=None, finished_at=None, lease_owner=None, lease_expires_at=None,
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
