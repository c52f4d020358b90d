"""Thin tasks, one per registered job kind: an item id in, one library call, the result recorded.

The tasks are generated from :data:`gloper_jobs.jobs.kinds.KINDS`: a new kind gets
its task (``gloper.<kind>``) without an edit here. Only transient errors (store or
broker unreachable, out of GPU memory) are retried, with exponential backoff;
when the retries are used up the item is failed with its last error. Everything
else is a failed item already recorded by
:func:`gloper_jobs.jobs.execution.execute_item`.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from gloper_jobs.exceptions import TransientError
from gloper_jobs.jobs.kinds import KINDS
from gloper_jobs.jobs.queues import task_name
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


def run_item(self: Task, item_id: int) -> dict[str, Any]:
    """Run one item of any kind (the kind is the item's job's) and return what happened."""
    from gloper_jobs.jobs.execution import execute_item  # torch loads in the child, not at import

    return execute_item(runtime.context(), item_id, retries=self.request.retries,
                        last_attempt=self.request.retries >= (self.max_retries or 0)).as_dict()


#: kind name -> its Celery task
TASKS: dict[str, Task] = {
    kind: app.task(name=task_name(kind), **_retry_options)(run_item) for kind in KINDS
}
