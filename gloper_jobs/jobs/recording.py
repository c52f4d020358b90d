"""The one recording path: an item's outcome or error, and closing a drained job.

The queue (:mod:`gloper_jobs.jobs.execution`) runs an item through :func:`run_and_record`;
the embedded run (:mod:`gloper_jobs.jobs.runner`) calls its two halves, :func:`attempt` in
worker threads and :func:`record_result` from its own thread, several items a transaction.
Both close a drained job with :func:`close_if_drained` in the recording transaction and
then run the kind's follow-up step outside it (:func:`finish_drained`).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from gloper_jobs.exceptions import GloperError, TransientError
from gloper_jobs.jobs.context import WorkerContext
from gloper_jobs.jobs.kinds import get_kind
from gloper_jobs.jobs.pipeline import ItemOutcome
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.db import Store
from gloper_jobs.store.models import Item, ItemStatus, Job

log = logging.getLogger(__name__)

#: :attr:`ItemResult.status` of a result dropped because its lease lapsed (see deliveries.Lease)
FENCED = "fenced"


@dataclass(frozen=True)
class ItemResult:
    """What running one item did: ``done``, ``failed``, ``skipped`` or ``fenced`` (with why)."""

    item_id: int
    status: str
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the task's return value (shown by Flower)."""
        return {"item_id": self.item_id, "status": self.status, "message": self.message}


def failure_message(exc: BaseException) -> str:
    """The message stored for a failed item: our errors say what to do; others get their type."""
    return str(exc) if isinstance(exc, GloperError) else f"{type(exc).__name__}: {exc}"


def record_outcome(session: Session, item_id: int, outcome: ItemOutcome, host: str | None,
                   device: str | None, lease: dl.Lease | None = None) -> None:
    """Write an item's candidates and mark it done (in the caller's transaction), only
    while ``lease`` holds (:class:`~gloper_jobs.store.deliveries.LeaseLost` otherwise)."""
    repo.record_success(
        session, item_id, outcome.candidates, choice=outcome.choice, seconds=outcome.seconds,
        width=outcome.width, height=outcome.height, foreground_fraction=outcome.foreground_fraction,
        foreground_fallback=outcome.foreground_fallback, note=outcome.note, host=host, device=device,
        info=outcome.info, lease=lease,
    )


def record_error(session: Session, item_id: int, message: str,
                 status: str = ItemStatus.failed.value, lease: dl.Lease | None = None) -> None:
    """Mark an item failed (or back to ``status``) with ``message`` and the traceback being
    handled (fenced by ``lease``)."""
    repo.record_failure(session, item_id, message, traceback.format_exc(), status=status, lease=lease)


def close_if_drained(session: Session, job: Job) -> bool:
    """Mark ``job`` done when nothing is pending, queued or running, and run its kind's
    :meth:`~gloper_jobs.jobs.kinds.base.JobKind.on_drained`; returns whether it drained."""
    if not dl.finish_job_if_drained(session, repo.require_id(job)):
        return False
    get_kind(job.kind).on_drained(session, job)
    return True


def finish_drained(store: Store, job: Job) -> None:
    """After the drain's transaction committed: the kind's follow-up step
    (:meth:`~gloper_jobs.jobs.kinds.base.JobKind.after_drained`; an extract job re-points)."""
    get_kind(job.kind).after_drained(store, job)


@dataclass(frozen=True)
class ItemFailure:
    """A bad item's error, caught where it ran (possibly another thread), to be recorded."""

    message: str
    traceback: str


def attempt(ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome | ItemFailure:
    """Run ``item`` with its job's kind, touching no database: its outcome, or the
    :class:`ItemFailure` of a bad item (any error but a :class:`TransientError`, which
    propagates for the caller to retry). Safe to call from several threads at once."""
    try:
        return get_kind(job.kind).run_item(ctx, job, item)
    except TransientError:
        raise
    except Exception as exc:  # noqa: BLE001 - isolate a bad photo: record it, keep going
        return ItemFailure(failure_message(exc), traceback.format_exc())


def record_result(session: Session, ctx: WorkerContext, item_id: int,
                  result: ItemOutcome | ItemFailure, lease: dl.Lease | None = None) -> ItemResult:
    """Record what :func:`attempt` returned (in the caller's transaction; fenced by ``lease``)."""
    if isinstance(result, ItemFailure):
        repo.record_failure(session, item_id, result.message, result.traceback, lease=lease)
        return ItemResult(item_id, ItemStatus.failed.value, result.message)
    record_outcome(session, item_id, result, host=ctx.host, device=ctx.device_label(result.device), lease=lease)
    return ItemResult(item_id, ItemStatus.done.value)


def run_and_record(ctx: WorkerContext, job: Job, item: Item, lease: dl.Lease | None = None) -> ItemResult:
    """Run ``item`` with its job's kind and record the outcome, or the error of a bad item.

    Any error but a :class:`TransientError` fails the item (message and traceback
    kept) and the run goes on; a transient one propagates for the caller to retry.
    The job is closed when this was its last item. With ``lease`` (a queue worker's
    claim) the item is recorded only while the lease holds: a late result, after another
    claim took the item, is dropped and logged (``fenced``) and nothing of it is written.
    """
    result = attempt(ctx, job, item)
    item_id = repo.require_id(item)
    try:
        with ctx.store.session() as s:
            recorded = record_result(s, ctx, item_id, result, lease=lease)
            drained = close_if_drained(s, job)
    except dl.LeaseLost as exc:
        log.warning("%s (stale result dropped)", exc)
        return ItemResult(item_id, FENCED, str(exc))
    if drained:
        finish_drained(ctx.store, job)
    return recorded
