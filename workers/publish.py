"""Publishing item tasks to Redis: batches over one producer, deterministic task ids."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from gloper_jobs.jobs.queues import task_name
from gloper_jobs.store import Job


def task_id(job: Job, item_id: int) -> str:
    """The deterministic id of an item's task: ``<kind>-<job>-<item>``."""
    return f"{job.kind}-{job.id}-{item_id}"


class CeleryPublisher:
    """A :data:`gloper_jobs.jobs.submission.Publisher` that sends tasks by name (no task code imported)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, job: Job, item_ids: Sequence[int]) -> int:
        if not job.queue:
            raise ValueError(f"job {job.id} has no queue recorded")
        name = task_name(job.kind)
        with self.app.producer_or_acquire() as producer:
            for item_id in item_ids:
                self.app.send_task(name, args=[item_id], queue=job.queue, task_id=task_id(job, item_id),
                                   producer=producer)
        return len(item_ids)
