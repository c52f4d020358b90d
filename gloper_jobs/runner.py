"""The embedded run: a whole dataset on this machine, no broker, resumable.

Interrupt it (Ctrl-C, kill -9) and run it again with the same settings: it
finds the same job (same key), skips done items, redoes the one that was in
flight, and writes no duplicate rows (every write is an upsert on a unique key)
and no half-written files (masks are renamed into place).
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gloper_jobs.datasets import scan_dataset
from gloper_jobs.exceptions import GloperError, TransientError
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.methods.base import Segmenter
from gloper_jobs.methods.registry import create_segmenter, get_segmenter_class
from gloper_jobs.pipeline import ForegroundFn, item_output_dir, process_photo
from gloper_jobs.reports import job_report
from gloper_jobs.settings import Settings
from gloper_jobs.store import ItemStatus, Job, JobKind, JobStatus, Store
from gloper_jobs.store import repository as repo
from gloper_jobs.torch_setup import configure_torch


@dataclass
class RunSummary:
    """What a run did; ``report`` is the printable Dice table and failure list."""

    job: Job
    created: bool
    processed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    report: str = ""


def build_segmenter(method: str, settings: Settings, profile: str | None = None,
                    params: dict[str, Any] | None = None) -> Segmenter:
    """Create the method; settings supply defaults (device, weights) that ``params`` override."""
    merged = {**get_segmenter_class(method).settings_defaults(settings), **(params or {})}
    return create_segmenter(method, profile, **merged)


def build_foreground(settings: Settings, enabled: bool = True) -> ForegroundFn | None:
    """The rembg extractor (fails early if weights are missing), or None for whole frames."""
    return ForegroundExtractor(settings.models_dir, settings.foreground_model) if enabled else None


def run_dataset(
    dataset: Path,
    method: str,
    settings: Settings,
    profile: str | None = None,
    params: dict[str, Any] | None = None,
    *,
    foreground: bool = True,
    retry_failed: bool = False,
    limit: int | None = None,
    progress: bool = True,
    store: Store | None = None,
    on_item: Callable[[str, str], None] | None = None,
) -> RunSummary:
    """Run ``method`` over every photo under ``dataset`` and record everything in the store.

    A photo that fails becomes a failed item with its error and traceback; the run
    goes on. Returns a :class:`RunSummary` whose ``report`` ends with the failures.
    """
    configure_torch(settings)
    segmenter = build_segmenter(method, settings, profile, params)
    items = scan_dataset(dataset)
    fg_fn = build_foreground(settings, foreground)
    store = store or Store(settings.database_url)
    spec = repo.JobSpec(
        kind=JobKind.extract.value, dataset=str(Path(dataset).resolve()), method=method,
        params=segmenter.params.identity(), profile=profile,
        foreground_model=settings.foreground_model if foreground else "none",
        eval_size=settings.eval_size, results_root=str(settings.results_dir.resolve()),
    )
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        job_id = _id(job.id)
        repo.add_items(s, job, items)
        # Nothing else runs this job in the embedded mode: in-flight items are stale.
        stale = [ItemStatus.running.value, ItemStatus.queued.value]
        repo.reset_items(s, job_id, stale + ([ItemStatus.failed.value] if retry_failed else []))
        todo = repo.items_with_status(s, job_id, [ItemStatus.pending.value])
        repo.set_job_status(s, job, JobStatus.running.value)
    summary = RunSummary(job=job, created=created, skipped=job.n_items - len(todo))
    if limit is not None:
        todo = list(todo)[:limit]
    host = socket.gethostname()
    bar = _progress(len(todo), f"{method} on {Path(dataset).name}", progress)
    try:
        for item in todo:
            item_id = _id(item.id)
            bar.set_postfix_str(item.rel_path[-40:], refresh=False)
            with store.session() as s:
                repo.mark_running(s, item_id, host=host)
            try:
                outcome = process_photo(
                    Path(item.path), segmenter, item_output_dir(Path(job.results_dir), item.rel_path),
                    fg_fn, Path(item.label_path) if item.label_path else None, item.species,
                    settings.eval_size, settings.max_image_pixels,
                )
            except TransientError:
                with store.session() as s:
                    repo.record_failure(s, item_id, "interrupted by a transient error", traceback.format_exc(),
                                        status=ItemStatus.pending.value)
                raise
            except Exception as exc:  # isolate a bad photo (permanent or unexpected), keep going
                message = str(exc) if isinstance(exc, GloperError) else f"{type(exc).__name__}: {exc}"
                with store.session() as s:
                    repo.record_failure(s, item_id, message, traceback.format_exc())
                summary.failed.append((item.rel_path, message))
                if on_item:
                    on_item(item.rel_path, ItemStatus.failed.value)
            else:
                with store.session() as s:
                    repo.record_success(
                        s, item_id, outcome.candidates, choice=outcome.choice, seconds=outcome.seconds,
                        width=outcome.width, height=outcome.height,
                        foreground_fraction=outcome.foreground.fraction,
                        foreground_fallback=outcome.foreground.fallback, note=outcome.note,
                        host=host, device=outcome.device, info=outcome.info,
                    )
                summary.processed += 1
                if on_item:
                    on_item(item.rel_path, ItemStatus.done.value)
            bar.update(1)
    except KeyboardInterrupt:
        with store.session() as s:
            repo.reset_items(s, job_id, [ItemStatus.running.value])
        raise
    finally:
        bar.close()
    with store.session() as s:
        job = repo.get_job(s, job_id)
        counts = repo.status_counts(s, job_id)
        if not counts.get(ItemStatus.pending.value) and not counts.get(ItemStatus.running.value):
            repo.set_job_status(s, job, JobStatus.done.value)
        summary.job = job
        summary.report = job_report(s, job)
    return summary


def _id(value: int | None) -> int:
    """A stored row's primary key (always set once flushed)."""
    if value is None:
        raise RuntimeError("row has no primary key; it was not flushed to the store")
    return value


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="photo", disable=not enabled, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}] {postfix}")
