"""Thin tasks: an item id in, one library call, the result recorded in the store.

Only transient errors (store or broker unreachable, out of GPU memory) are
retried, with exponential backoff; when the retries are used up the item is
failed with its last error. Everything else is a failed item already recorded
by :func:`gloper_jobs.execution.execute_item`.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from gloper_jobs.exceptions import TransientError
from gloper_jobs.queues import TASK_NAMES
from workers import runtime
from workers.app import app

_settings = app.gloper_settings

runtime.install(app)

_retry_options: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": _settings.retry_backoff,
    "retry_backoff_max": _settings.retry_backoff_max,
    "retry_jitter": True,
    "max_retries": _settings.max_retries,
}


@app.task(name=TASK_NAMES["extract"], **_retry_options)
def extract(self: Task, item_id: int) -> dict[str, Any]:
    """Segment one photo of an extract job and record its masks and scores."""
    from gloper_jobs.execution import execute_item  # torch loads in the child, not at import

    return execute_item(runtime.context(), item_id, retries=self.request.retries,
                        last_attempt=self.request.retries >= (self.max_retries or 0)).as_dict()


@app.task(name=TASK_NAMES["evaluate"], **_retry_options)
def evaluate(self: Task, item_id: int) -> dict[str, Any]:
    """Score the stored masks of one photo against its label and record the scores."""
    from gloper_jobs.execution import execute_item

    return execute_item(runtime.context(), item_id, retries=self.request.retries,
                        last_attempt=self.request.retries >= (self.max_retries or 0)).as_dict()


@app.task(name=TASK_NAMES["train"], **_retry_options)
def train(self: Task, item_id: int) -> dict[str, Any]:
    """Run one (photo, setting) of a calibration sweep and record its scores."""
    from gloper_jobs.execution import execute_item

    return execute_item(runtime.context(), item_id, retries=self.request.retries,
                        last_attempt=self.request.retries >= (self.max_retries or 0)).as_dict()
