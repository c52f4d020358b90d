"""Running one queued item in a worker process: claim, heartbeat, run its kind, record.

The Celery tasks (``workers.tasks``) call :func:`execute_item` and nothing else;
this module knows nothing of Celery. The item runs and is recorded exactly as
the embedded run does it (:func:`gloper_jobs.jobs.recording.run_and_record`).
"""

from __future__ import annotations

import logging
import os
import threading
import traceback

from gloper_jobs.exceptions import GloperError, TransientError
from gloper_jobs.jobs.context import WorkerContext
from gloper_jobs.jobs.recording import (
    FENCED,
    ItemResult,
    close_if_drained,
    finish_drained,
    record_error,
    run_and_record,
)
from gloper_jobs.store import Item, ItemStatus, Store
from gloper_jobs.store import deliveries as dl

log = logging.getLogger(__name__)


def owner_gone_here(host: str) -> dl.OwnerGone:
    """Whether an item's lease holder was a process on ``host`` that no longer exists
    (a pool process killed mid-item): its lease may be taken over at once instead of
    waiting for it to expire. A holder elsewhere, or alive, keeps its lease."""
    def gone(item: Item) -> bool:
        owner = item.lease_owner or ""
        pid = owner.rpartition(":")[2]
        if item.host != host or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    return gone


class Heartbeat:
    """Writes an item's ``heartbeat_at`` and extends its lease every ``every`` seconds
    from a thread while in use."""

    def __init__(self, store: Store, item_id: int, every: float, owner: str | None = None,
                 lease_seconds: float | None = None) -> None:
        self._store, self._item_id, self._every = store, item_id, every
        self._owner, self._lease = owner, lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{item_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._store.session() as s:
                    held = dl.beat(s, self._item_id, self._owner, self._lease)
                if not held:
                    log.warning("item %s: lease lost (it expired and another process took the item)",
                                self._item_id)
            except GloperError as exc:  # the store is down: the item's result will retry
                log.warning("heartbeat of item %s not written: %s", self._item_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def execute_item(ctx: WorkerContext, item_id: int, retries: int = 0, last_attempt: bool = False) -> ItemResult:
    """Claim item ``item_id``, run it with its job's kind and record the result in the store.

    ``retries`` is how many times the task was retried after a transient error
    (those deliveries ended cleanly and do not count against the delivery cap).
    A bad photo or any other error becomes a failed item with its message and
    traceback. A :class:`TransientError` puts the item back to ``queued`` and is
    re-raised for the task layer to retry; on the ``last_attempt`` (the task's
    retries are used up) it fails the item instead, with the last error.
    """
    with ctx.store.session() as s:
        claim = dl.claim(s, item_id, cap=ctx.settings.max_deliveries + retries, host=ctx.host,
                         worker=ctx.worker, lease_seconds=ctx.settings.stale_seconds,
                         owner_gone=owner_gone_here(ctx.host))
    if claim.skipped is not None or claim.item is None or claim.job is None:
        return ItemResult(item_id, "skipped", claim.skipped)
    job = claim.job
    try:
        with Heartbeat(ctx.store, item_id, ctx.settings.heartbeat_seconds, ctx.worker, ctx.settings.stale_seconds):
            return run_and_record(ctx, job, claim.item, lease=dl.Lease.of(claim.item))
    except TransientError as exc:
        if last_attempt:
            message = f"gave up after {retries} retries of a transient error: {exc}"
            try:
                with ctx.store.session() as s:
                    record_error(s, item_id, message, lease=dl.Lease.of(claim.item))
                    drained = close_if_drained(s, job)
            except dl.LeaseLost as fenced:
                log.warning("%s (stale failure dropped)", fenced)
                return ItemResult(item_id, FENCED, str(fenced))
            if drained:
                finish_drained(ctx.store, job)
            return ItemResult(item_id, ItemStatus.failed.value, message)
        try:
            with ctx.store.session() as s:
                dl.release(s, item_id, str(exc), traceback.format_exc(), owner=ctx.worker)
        except TransientError:
            log.warning("item %s not released (the store is down too); the retry will claim it", item_id)
        raise
