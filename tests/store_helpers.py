"""Store queries only the tests ask."""

from __future__ import annotations

from sqlmodel import Session, col, select

from gloper_jobs.store.deliveries import UNFINISHED
from gloper_jobs.store.models import Item, ItemStatus


def ids_to_enqueue(session: Session, job_id: int, include_queued: bool = False) -> list[int]:
    """Ids of the job's pending items (and queued ones, whose messages the broker may have
    lost, when ``include_queued``), in path order."""
    statuses = list(UNFINISHED) if include_queued else [ItemStatus.pending.value]
    rows = session.exec(select(Item.id).where(col(Item.job_id) == job_id, col(Item.status).in_(statuses))
                        .order_by(col(Item.rel_path)))
    return [int(i) for i in rows.all() if i is not None]
