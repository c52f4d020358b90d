"""Running one queued item in a worker process: claim it, process it, record it.

The Celery task (``workers.tasks``) calls :func:`execute_item` and nothing else;
this module knows nothing of Celery. :class:`WorkerContext` is the per-process
state (store engine, segmenter cache, foreground model) that a worker builds
once in its child process, after the fork, so CUDA is only ever initialised
there. The outcome is recorded exactly as the embedded run records it
(:mod:`gloper_jobs.runner`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gloper_jobs import calibration
from gloper_jobs.cache import SegmenterCache
from gloper_jobs.evaluation import score_item
from gloper_jobs.exceptions import GloperError, PermanentError, TransientError
from gloper_jobs.paths import item_inputs
from gloper_jobs.pipeline import ForegroundFn, item_output_dir, process_photo
from gloper_jobs.runner import build_foreground, build_segmenter, configure_torch
from gloper_jobs.settings import Settings
from gloper_jobs.store import Item, ItemStatus, Job, JobKind, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What one worker process keeps between items (built once, after the fork)."""

    settings: Settings
    store: Store
    segmenters: SegmenterCache
    host: str
    worker: str
    _foregrounds: dict[str, ForegroundFn | None] = field(default_factory=dict)

    @classmethod
    def boot(cls, settings: Settings, node: str | None = None, preload: bool = True) -> WorkerContext:
        """Open the store, set torch threads and load the default foreground model.

        ``node`` is the worker's name (``gpu0@host``); the item rows record
        ``<node>:<pid>``, which also tells an operator which process to look at.
        """
        configure_torch(settings)
        store = Store(settings.database_url)
        cache = SegmenterCache(lambda m, p, params: build_segmenter(m, settings, p, params))
        host = socket.gethostname()
        ctx = cls(settings, store, cache, host, f"{node or host}:{os.getpid()}")
        if preload:
            fg = ctx.foreground(settings.foreground_model)
            if fg is not None and hasattr(fg, "alpha"):
                # Build the ONNX session now, not on the first photo.
                import numpy as np

                fg.alpha(np.zeros((8, 8, 3), dtype=np.uint8))
        return ctx

    def foreground(self, model: str) -> ForegroundFn | None:
        """The foreground function of a job's ``foreground_model`` (``none``: whole frame)."""
        if model not in self._foregrounds:
            if model == "none":
                self._foregrounds[model] = None
            else:
                self._foregrounds[model] = build_foreground(
                    self.settings.model_copy(update={"foreground_model": model}))
        return self._foregrounds[model]

    def device_label(self, ran_on: str | None) -> str | None:
        """The device to record: the card this worker is bound to when the method used CUDA."""
        if ran_on and ran_on.startswith("cuda") and self.settings.worker_device:
            return self.settings.worker_device
        return ran_on

    def close(self) -> None:
        self.segmenters.clear()
        self.store.dispose()


class Heartbeat:
    """Writes an item's ``heartbeat_at`` every ``every`` seconds from a thread while in use."""

    def __init__(self, store: Store, item_id: int, every: float) -> None:
        self._store, self._item_id, self._every = store, item_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{item_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with self._store.session() as s:
                    dl.beat(s, self._item_id)
            except GloperError as exc:  # the store is down: the item's result will retry
                log.warning("heartbeat of item %s not written: %s", self._item_id, exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class ItemResult:
    """What :func:`execute_item` did: ``done``, ``failed`` or ``skipped: <why>``."""

    item_id: int
    status: str
    message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the task's return value (shown by Flower)."""
        return {"item_id": self.item_id, "status": self.status, "message": self.message}


def _finish_if_drained(session: Any, job: Job) -> None:
    """Close the job when nothing is left; a finished training job stores its calibration."""
    if dl.finish_job_if_drained(session, job.id or 0) and job.kind == JobKind.train.value:
        calibration.best_settings(session, job)


def execute_item(ctx: WorkerContext, item_id: int, retries: int = 0, last_attempt: bool = False) -> ItemResult:
    """Claim item ``item_id``, segment its photo and record the result in the store.

    Extract items are segmented; evaluate items only score the masks their source
    extract job stored. ``retries`` is how many times the task was retried after a transient error
    (those deliveries ended cleanly and do not count against the delivery cap).
    A bad photo or any other error becomes a failed item with its message and
    traceback. A :class:`TransientError` puts the item back to ``queued`` and is
    re-raised for the task layer to retry; on the ``last_attempt`` (the task's
    retries are used up) it fails the item instead, with the last error.
    """
    with ctx.store.session() as s:
        claim = dl.claim(s, item_id, cap=ctx.settings.max_deliveries + retries, host=ctx.host,
                         worker=ctx.worker)
    if claim.skipped is not None or claim.item is None or claim.job is None:
        return ItemResult(item_id, "skipped", claim.skipped)
    item, job = claim.item, claim.job
    try:
        with Heartbeat(ctx.store, item_id, ctx.settings.heartbeat_seconds):
            if job.kind == JobKind.evaluate.value:
                return _record_scores(ctx, job, item)
            if job.kind == JobKind.train.value:  # one (photo, setting) of a calibration sweep
                params, photo = calibration.setting_of(job, item)
                out_dir = item_output_dir(Path(job.results_dir), photo) / f"setting-{item.rel_path.rpartition('=')[2]}"
                segmenter = ctx.segmenters.get(job.method, None, params)
            else:
                out_dir = item_output_dir(Path(job.results_dir), item.rel_path)
                segmenter = ctx.segmenters.get(job.method, job.profile, calibration.item_params(job, item))
            source, label = item_inputs(job.dataset, item.path, item.label_path)
            outcome = process_photo(
                source, segmenter, out_dir, ctx.foreground(job.foreground_model), label, item.species,
                job.eval_size, ctx.settings.max_image_pixels,
            )
    except TransientError as exc:
        if last_attempt:
            message = f"gave up after {retries} retries of a transient error: {exc}"
            with ctx.store.session() as s:
                repo.record_failure(s, item_id, message, traceback.format_exc())
                _finish_if_drained(s, job)
            return ItemResult(item_id, ItemStatus.failed.value, message)
        try:
            with ctx.store.session() as s:
                dl.release(s, item_id, str(exc), traceback.format_exc())
        except TransientError:
            log.warning("item %s not released (the store is down too); the retry will claim it", item_id)
        raise
    except Exception as exc:  # noqa: BLE001 - isolate a bad photo: record it, keep the worker
        message = str(exc) if isinstance(exc, PermanentError) else f"{type(exc).__name__}: {exc}"
        with ctx.store.session() as s:
            repo.record_failure(s, item_id, message, traceback.format_exc())
            _finish_if_drained(s, job)
        return ItemResult(item_id, ItemStatus.failed.value, message)
    with ctx.store.session() as s:
        repo.record_success(
            s, item_id, outcome.candidates, choice=outcome.choice, seconds=outcome.seconds,
            width=outcome.width, height=outcome.height, foreground_fraction=outcome.foreground.fraction,
            foreground_fallback=outcome.foreground.fallback, note=outcome.note, host=ctx.host,
            device=ctx.device_label(outcome.device), info=outcome.info,
        )
        _finish_if_drained(s, job)
    return ItemResult(item_id, ItemStatus.done.value)


def _record_scores(ctx: WorkerContext, job: Job, item: Item) -> ItemResult:
    """An evaluate item: score the source's stored masks, record them (no segmentation)."""
    with ctx.store.session() as s:
        scored = score_item(s, job, item)
        src = scored.source
        repo.record_success(
            s, item.id or 0, scored.candidates, choice=src.choice or "", seconds=scored.seconds,
            width=src.width or 0, height=src.height or 0, foreground_fraction=src.foreground_fraction,
            foreground_fallback=src.foreground_fallback, note=src.note, host=ctx.host, device="cpu",
        )
        _finish_if_drained(s, job)
    return ItemResult(item.id or 0, ItemStatus.done.value)
