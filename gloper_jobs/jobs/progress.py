"""A job's progress, read from the store alone (Flower forgets on restart; the store does not).

Counts per status, photos per hour over a recent window, an ETA, throughput
per worker process and device, stale running items, and the latest errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from gloper_jobs.jobs.polarity import format_species_polarity
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store.models import Item, ItemStatus, Job, utcnow
from gloper_jobs.store.repository import latest_errors, require_id, status_counts

#: photos per hour is measured over the items finished in this window
RATE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class WorkerRow:
    """Done items of one (host, device, worker) and their mean seconds per photo."""

    host: str
    device: str
    worker: str
    done: int
    mean_seconds: float


@dataclass
class JobProgress:
    """Everything ``gloper status`` prints about one job."""

    job: Job
    counts: dict[str, int]
    per_hour: float | None
    eta: timedelta | None
    stale: int
    workers: list[WorkerRow] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: workers of this job silent for over ``stale_seconds`` while it has unfinished items:
    #: (worker, seconds since its last heartbeat or finished item)
    lost: list[tuple[str, float]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return sum(self.counts.get(s, 0) for s in dl.STARTABLE)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=utcnow().tzinfo)


def job_progress(session: Session, job: Job, stale_seconds: float, n_errors: int = 5,
                 now: datetime | None = None) -> JobProgress:
    """Read one job's progress; ``stale_seconds`` as in :func:`deliveries.lock_stale`."""
    job_id = require_id(job)
    now = now or utcnow()
    counts = status_counts(session, job_id)
    finished = [ItemStatus.done.value, ItemStatus.failed.value]
    span = session.exec(select(func.min(Item.finished_at), func.max(Item.finished_at), func.count()).where(
        col(Item.job_id) == job_id, col(Item.status).in_(finished), col(Item.finished_at) >= now - RATE_WINDOW,
    )).one()
    per_hour: float | None = None
    first, last, n = span
    if n and first is not None:
        # Over the window: from its start (or the first finish, if later) to now.
        start = max(_aware(first) - timedelta(seconds=1), now - RATE_WINDOW)
        hours = max((now - start).total_seconds(), 1.0) / 3600
        per_hour = int(n) / hours
    progress = JobProgress(job, counts, per_hour, None, len(dl.stale_items(session, job_id, stale_seconds)))
    if per_hour and progress.remaining:
        progress.eta = timedelta(hours=progress.remaining / per_hour)
    rows = session.execute(  # five columns: SQLAlchemy's select (sqlmodel's stops at four)
        sa_select(col(Item.host), col(Item.device), col(Item.worker), func.count(), func.avg(col(Item.seconds)))
        .where(col(Item.job_id) == job_id, col(Item.status) == ItemStatus.done.value)
        .group_by(col(Item.host), col(Item.device), col(Item.worker)).order_by(col(Item.worker))
    ).all()
    progress.workers = [WorkerRow(h or "?", d or "?", w or "?", int(c), float(s or 0.0)) for h, d, w, c, s in rows]
    progress.errors = [(it.rel_path, it.error or "") for it in latest_errors(session, job_id, n_errors)]
    if progress.remaining:
        progress.lost = lost_workers(session, job_id, stale_seconds, now)
    return progress


def lost_workers(session: Session, job_id: int, stale_seconds: float, now: datetime) -> list[tuple[str, float]]:
    """Workers (``<node>:<pid>``) that worked on the job and gave no sign (a heartbeat, a
    claim or a finished item) for over ``stale_seconds``: cut off, stopped or dead. Read
    while the job has unfinished items (a live worker would be taking them)."""
    last = func.max(func.coalesce(col(Item.heartbeat_at), col(Item.finished_at), col(Item.started_at)))
    rows = session.execute(sa_select(col(Item.worker), last).where(
        col(Item.job_id) == job_id, col(Item.worker).is_not(None)).group_by(col(Item.worker))).all()
    lost = []
    for worker, seen in rows:
        if seen is not None and (age := (now - _aware(seen)).total_seconds()) > stale_seconds:
            lost.append((str(worker), age))
    return sorted(lost)


def format_progress(p: JobProgress) -> str:
    """The text ``gloper status JOB`` prints."""
    c = p.counts
    job = p.job
    lines = [f"job {job.id} · {job.kind} · {job.method} · {job.status} · queue {job.queue or '-'} · {job.dataset}"]
    lines.append(
        f"  done {c.get('done', 0)}  failed {c.get('failed', 0)}  "
        f"pending {c.get('pending', 0)}  queued {c.get('queued', 0)}  running {c.get('running', 0)}  "
        f"cancelled {c.get('cancelled', 0)}  (of {job.n_items}; stale running {p.stale})"
    )
    rate = f"{p.per_hour:.0f} photos/h" if p.per_hour else "no photo finished in the last 15 min"
    eta = f", ETA {_fmt_delta(p.eta)}" if p.eta else ""
    lines.append(f"  {rate}{eta}")
    if p.workers:
        lines.append("  per worker:")
        for w in p.workers:
            lines.append(f"    {w.worker:<32} {w.device:<8} {w.done:>6} done  {w.mean_seconds:6.2f} s/photo")
    if p.lost:
        lines.append("  lost workers (no heartbeat or finished item for over the lease):")
        lines.extend(f"    {worker:<32} last seen {age:.0f} s ago" for worker, age in p.lost)
    if p.errors:
        lines.append("  latest errors:")
        lines.extend(f"    {path}: {err.splitlines()[0] if err else ''}" for path, err in p.errors)
    polarity = format_species_polarity(job)
    if polarity:
        lines.extend("  " + line for line in polarity.splitlines())
    return "\n".join(lines)


def _fmt_delta(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
