"""Operations on the store: jobs, items, results and failures, all idempotent.

Writes use the database's own upsert (``INSERT .. ON CONFLICT``) on the unique
keys, so a repeated write (a resumed run, a redelivered task) never makes a
second row. Works on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, update
from sqlalchemy import select as sa_select  # sqlmodel's select types at most four columns
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from gloper_jobs.data.datasets import DatasetItem
from gloper_jobs.exceptions import JobNotFoundError
from gloper_jobs.store.deliveries import Lease, fenced_update
from gloper_jobs.store.models import Candidate, Item, ItemStatus, Job, JobStatus, utcnow

if TYPE_CHECKING:
    from gloper_jobs.jobs.candidates import CandidateRecord


def insert_statement(session: Session, model: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"upserts are implemented for SQLite and PostgreSQL, not {dialect}")


def job_key(kind: str, dataset: str, identity: dict[str, Any]) -> str:
    """Stable 64-hex key of a job: kind, dataset path and result-determining settings."""
    blob = json.dumps({"kind": kind, "dataset": dataset, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class JobSpec:
    """Everything that identifies a job; :func:`job_key` hashes it."""

    kind: str
    dataset: str
    method: str
    params: dict[str, Any]
    profile: str | None
    foreground_model: str
    eval_size: int
    results_root: str
    source: str | None = None  # a manifest (with its digest) or URL the items came from
    #: the foreground's outline band no mask keeps (share of the side; 0 for jobs made before it)
    foreground_rim: float = 0.0

    @property
    def key(self) -> str:
        extra: dict[str, Any] = {"source": self.source} if self.source else {}
        if self.foreground_rim:  # keys of jobs without a rim stay what they were
            extra["foreground_rim"] = self.foreground_rim
        return job_key(self.kind, self.dataset, {
            "method": self.method, "params": self.params,
            "foreground_model": self.foreground_model, "eval_size": self.eval_size, **extra,
        })


def get_or_create_job(session: Session, spec: JobSpec) -> tuple[Job, bool]:
    """The job with ``spec.key``, created if absent; returns ``(job, created)``."""
    key = spec.key
    stmt = insert_statement(session, Job).values(
        key=key, kind=spec.kind, dataset=spec.dataset, method=spec.method, profile=spec.profile,
        params=spec.params, foreground_model=spec.foreground_model, foreground_rim=spec.foreground_rim,
        eval_size=spec.eval_size,
        status=JobStatus.pending.value, results_dir="", n_items=0, source=spec.source,
        created_at=utcnow(), updated_at=utcnow(),
    ).on_conflict_do_nothing(index_elements=["key"]).returning(col(Job.id))
    # RETURNING, not rowcount: psycopg reports -1 for these inserts.
    created = session.execute(stmt).first() is not None
    job = session.exec(select(Job).where(Job.key == key)).one()
    if not job.results_dir:
        job.results_dir = f"{spec.results_root.rstrip('/')}/job-{job.id:05d}-{spec.method}"
        session.add(job)
        session.flush()
    return job, created


def add_items(session: Session, job: Job, items: Iterable[DatasetItem], batch: int = 2000) -> int:
    """Insert the job's items, skipping those already there; returns how many are new."""
    job_id = require_id(job)
    added = 0
    rows: list[dict[str, Any]] = []
    now = utcnow()

    def flush_rows() -> int:
        if not rows:
            return 0
        # executemany with a statement compiled once (SQLAlchemy's "insertmanyvalues"):
        # compiling one 2,000-row VALUES clause per batch cost ~0.2 ms per item.
        table = Item.__table__  # type: ignore[attr-defined]
        stmt = insert_statement(session, table).on_conflict_do_nothing(
            index_elements=["job_id", "rel_path"]
        ).returning(table.c.id)
        n = len(session.connection().execute(stmt, rows).all())  # RETURNING: psycopg's rowcount is -1
        rows.clear()
        return n

    for it in items:
        rows.append({
            "job_id": job_id, "rel_path": it.rel_path, "path": str(it.path), "species": it.species,
            "label_path": str(it.label_path) if it.label_path else None,
            "identity": it.identity, "image_id": it.image_id,
            "status": ItemStatus.pending.value, "attempts": 0, "deliveries": 0, "created_at": now,
        })
        if len(rows) >= batch:
            added += flush_rows()
    added += flush_rows()
    job.n_items = session.exec(select(func.count()).select_from(Item).where(Item.job_id == job_id)).one()
    job.updated_at = utcnow()
    session.add(job)
    return added


def unfinished_with_other_rim(session: Session, job: Job) -> list[Job]:
    """Unfinished jobs that are ``job`` but for the foreground's rim (a job begun before the
    rim's default changed): the job a user rerunning the same command may mean to resume."""
    rows = session.exec(select(Job).where(
        Job.kind == job.kind, Job.dataset == job.dataset, Job.method == job.method,
        Job.foreground_model == job.foreground_model, Job.eval_size == job.eval_size,
        col(Job.id) != job.id, Job.status != JobStatus.done.value)).all()
    return [j for j in rows if j.foreground_rim != job.foreground_rim and j.params == job.params
            and j.source == job.source]


def require_id(row: Job | Item) -> int:
    """A stored row's primary key; :class:`JobNotFoundError` for a row never saved.

    The one check of a missing id (a job or item object that is not in the store).
    """
    if row.id is None:
        raise JobNotFoundError(f"this {type(row).__name__.lower()} is not in the store (it has no id); "
                               "`gloper jobs` lists the jobs")
    return row.id


def get_job(session: Session, job_id: int | None = None) -> Job:
    """Job ``job_id``, or the newest job when None; :class:`JobNotFoundError` otherwise."""
    if job_id is None:
        job = session.exec(select(Job).order_by(col(Job.id).desc()).limit(1)).first()
        if job is None:
            raise JobNotFoundError("the store has no jobs yet; start one with `gloper run DATASET`")
        return job
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id} in the store; `gloper jobs` lists them")
    return job


def list_jobs(session: Session) -> Sequence[Job]:
    return session.exec(select(Job).order_by(col(Job.id))).all()


def items_with_status(session: Session, job_id: int, statuses: Sequence[str]) -> Sequence[Item]:
    return session.exec(
        select(Item).where(Item.job_id == job_id, col(Item.status).in_(list(statuses))).order_by(col(Item.rel_path))
    ).all()


def pending_page(session: Session, job_id: int, after_id: int, limit: int) -> Sequence[Item]:
    """Up to ``limit`` of the job's pending items with ids above ``after_id``, by id: one page of
    a keyset walk over the items (the next page starts after the last id of this one), so a
    run over any number of items holds one page of rows at a time."""
    return session.exec(
        select(Item).where(Item.job_id == job_id, Item.status == ItemStatus.pending.value, col(Item.id) > after_id)
        .order_by(col(Item.id)).limit(limit)
    ).all()


def count_with_status(session: Session, job_id: int, statuses: Sequence[str]) -> int:
    """How many of the job's items are in ``statuses``."""
    return int(session.exec(select(func.count()).select_from(Item).where(
        Item.job_id == job_id, col(Item.status).in_(list(statuses)))).one())


def status_counts(session: Session, job_id: int) -> dict[str, int]:
    rows = session.exec(
        select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)
    ).all()
    return {status: int(n) for status, n in rows}


def mark_running(session: Session, item_id: int, host: str | None = None, device: str | None = None,
                 worker: str | None = None) -> None:
    now = utcnow()
    session.execute(
        update(Item).where(col(Item.id) == item_id).values(
            status=ItemStatus.running.value, started_at=now, heartbeat_at=now,
            attempts=Item.attempts + 1, host=host, device=device, worker=worker,
        )
    )


def record_success(session: Session, item_id: int, candidates: Sequence[CandidateRecord], *,
                   choice: str, seconds: float, width: int, height: int,
                   foreground_fraction: float | None, foreground_fallback: bool | None,
                   note: str | None, host: str | None, device: str | None,
                   info: dict[str, Any] | None = None, lease: Lease | None = None) -> None:
    """Write an item's candidates (upsert) and mark it done, in the caller's transaction.

    ``info`` is the method's JSON-ready report on how it made the masks. With ``lease``
    (a queue worker's claim) the item is marked first and only while the lease holds:
    otherwise :class:`~gloper_jobs.store.deliveries.LeaseLost` is raised before any
    candidate is written.
    """
    fenced_update(
        session, item_id, lease,
        status=ItemStatus.done.value, choice=choice, seconds=seconds, width=width, height=height,
        foreground_fraction=foreground_fraction, foreground_fallback=foreground_fallback,
        note=note, error=None, traceback=None, finished_at=utcnow(), heartbeat_at=utcnow(),
        host=host, device=device, info=json.loads(json.dumps(info, default=str)) if info else None,
    )
    for c in candidates:
        s = c.scores or {}
        values = {
            "item_id": item_id, "name": c.name, "mask_path": c.mask_path, "rle": c.rle, "is_choice": c.is_choice,
            "derived": c.derived, "pattern_fraction": c.pattern_fraction, "dice": s.get("dice"),
            "iou": s.get("iou"), "precision": s.get("precision"), "recall": s.get("recall"),
        }
        stmt = insert_statement(session, Candidate).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["item_id", "name"],
            set_={k: stmt.excluded[k] for k in values if k not in ("item_id", "name")},
        )
        session.execute(stmt)


def record_failure(session: Session, item_id: int, error: str, traceback_text: str | None,
                   status: str = ItemStatus.failed.value, lease: Lease | None = None) -> None:
    """Mark an item failed (or back to pending) with its message and traceback (fenced by
    ``lease`` as in :func:`record_success`)."""
    fenced_update(session, item_id, lease, status=status, error=error, traceback=traceback_text,
                  finished_at=utcnow())


def reset_items(session: Session, job_id: int, statuses: Sequence[str]) -> int:
    """Put the job's items in ``statuses`` back to pending; returns how many."""
    result = session.execute(
        update(Item).where(col(Item.job_id) == job_id, col(Item.status).in_(list(statuses))).values(
            status=ItemStatus.pending.value, started_at=None, heartbeat_at=None,
        ).returning(col(Item.id))
    )
    return len(result.all())


def item_candidates(session: Session, job_id: int) -> list[tuple[Item, Candidate]]:
    """Every (item, candidate) pair of a job's done items, ordered by path."""
    rows = session.exec(
        select(Item, Candidate).join(Candidate, col(Candidate.item_id) == col(Item.id))
        .where(Item.job_id == job_id, Item.status == ItemStatus.done.value)
        .order_by(col(Item.rel_path), col(Candidate.name))
    ).all()
    return [(i, c) for i, c in rows]


def score_rows(session: Session, job_id: int, page: int = 2000) -> Iterator[tuple[Any, ...]]:
    """``(item id, rel_path, species, candidate, dice, derived, is_choice)`` of every scored
    candidate of the job's done items, grouped by item (ordered by its id), streamed ``page``
    rows at a time: what a report's Dice table needs, without the masks."""
    stmt = (sa_select(col(Item.id), col(Item.rel_path), col(Item.species), col(Candidate.name),
                      col(Candidate.dice), col(Candidate.derived), col(Candidate.is_choice))
            .join(Candidate, col(Candidate.item_id) == col(Item.id))
            .where(col(Item.job_id) == job_id, col(Item.status) == ItemStatus.done.value, col(Candidate.dice).is_not(None))
            .order_by(col(Item.id), col(Candidate.name)).execution_options(yield_per=page))
    yield from session.execute(stmt)


def chosen_rows(session: Session, job_id: int, limit: int) -> list[tuple[str, str, float]]:
    """``(rel_path, candidate, pattern fraction)`` of the first ``limit`` done items' chosen masks, by path."""
    rows = session.execute(
        select(Item.rel_path, Candidate.name, Candidate.pattern_fraction)
        .join(Candidate, col(Candidate.item_id) == col(Item.id))
        .where(Item.job_id == job_id, Item.status == ItemStatus.done.value, col(Candidate.is_choice))
        .order_by(col(Item.rel_path)).limit(limit)).all()
    return [(r, n, float(f)) for r, n, f in rows]


def latest_errors(session: Session, job_id: int, limit: int | None = None) -> Sequence[Item]:
    stmt = select(Item).where(Item.job_id == job_id, Item.status == ItemStatus.failed.value).order_by(
        col(Item.finished_at).desc(), col(Item.rel_path)
    )
    if limit:
        stmt = stmt.limit(limit)
    return session.exec(stmt).all()



def set_priority(session: Session, job_id: int, priority: str) -> None:
    """Set a job's priority level (its items published from now on go to that level's queue)."""
    session.execute(update(Job).where(col(Job.id) == job_id).values(priority=priority, updated_at=utcnow()))


def job_species(session: Session, job_id: int) -> list[str]:
    """The species of a job's items, sorted."""
    return sorted(set(session.exec(select(Item.species).where(Item.job_id == job_id).distinct()).all()))
