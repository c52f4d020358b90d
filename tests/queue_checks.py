"""Store queries the queue tests assert on."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select

from gloper_jobs.store import Candidate, Item, Store
from gloper_jobs.store import repository as repo

UNFINISHED = ("pending", "queued", "running")


def counts(store: Store, job_id: int) -> dict[str, int]:
    with store.session() as s:
        return repo.status_counts(s, job_id)


def drained(store: Store, job_id: int) -> bool:
    c = counts(store, job_id)
    return sum(c.values()) > 0 and not any(c.get(k) for k in UNFINISHED)


def items(store: Store, job_id: int) -> dict[str, Item]:
    with store.session() as s:
        return {i.rel_path: i for i in s.exec(select(Item).where(Item.job_id == job_id)).all()}


def candidate_rows(store: Store, job_id: int) -> list[tuple[str, str, int]]:
    """(rel_path, candidate name, number of rows) for every candidate of the job."""
    with store.session() as s:
        rows = s.exec(
            select(Item.rel_path, Candidate.name, func.count())
            .join(Candidate, col(Candidate.item_id) == col(Item.id))
            .where(Item.job_id == job_id).group_by(Item.rel_path, Candidate.name)
        ).all()
    return [(r, n, int(c)) for r, n, c in rows]
