"""Publishing item tasks to Redis: batches over one producer, deterministic task ids."""

from __future__ import annotations

import json
from collections.abc import Sequence

from celery import Celery
from kombu.exceptions import OperationalError

from gloper_jobs.exceptions import BrokerUnavailableError
from gloper_jobs.jobs.queues import priority_queue, task_name
from gloper_jobs.store import Job


def task_id(job: Job, item_id: int) -> str:
    """The deterministic id of an item's task: ``<kind>-<job>-<item>``."""
    return f"{job.kind}-{job.id}-{item_id}"


def item_of_task(task: str) -> int | None:
    """The item id in a task id made by :func:`task_id` (None for any other id)."""
    tail = task.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


class CeleryPublisher:
    """A :class:`gloper_jobs.jobs.publishing.Publisher` that sends tasks by name (no task code imported)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, job: Job, item_ids: Sequence[int]) -> int:
        if not job.queue:
            raise ValueError(f"job {job.id} has no queue recorded")
        name = task_name(job.kind)
        queue = priority_queue(job.queue, job.priority)
        try:
            with self.app.producer_or_acquire() as producer:
                for item_id in item_ids:
                    self.app.send_task(name, args=[item_id], queue=queue, task_id=task_id(job, item_id),
                                       producer=producer, argsrepr=f"(item {item_id} of job {job.id})")
        except (OperationalError, OSError) as exc:
            raise BrokerUnavailableError(
                f"publishing job {job.id}'s items failed, the broker is unreachable ({exc}); the unsent "
                f"items stay pending: once Redis is back run `gloper resume {job.id}`") from exc
        return len(item_ids)

    def broker_id(self) -> str | None:
        """Redis' ``run_id``: a new one after every restart of the server."""
        with self.app.connection_for_read() as conn:
            return str(conn.default_channel.client.info("server").get("run_id") or "") or None

    def queue_length(self, job: Job) -> int:
        """Messages waiting in ``job``'s Redis queue."""
        if not job.queue:
            return 0
        with self.app.connection_for_read() as conn:
            return int(conn.default_channel.client.llen(priority_queue(job.queue, job.priority)))

    def held(self, job: Job) -> set[int]:
        """Item ids of ``job`` whose message is waiting in its queue or reserved by a worker
        (kombu's hash of unacknowledged messages: ``[message, exchange, routing key]``)."""
        found = self.waiting(job)
        prefix = f"{job.kind}-{job.id}-"
        with self.app.connection_for_read() as conn:
            channel = conn.default_channel
            for raw in channel.client.hvals(channel.unacked_key):
                tid = _task_id_of(raw, unacked=True)
                if tid and tid.startswith(prefix) and (item := item_of_task(tid)) is not None:
                    found.add(item)
        return found

    def waiting(self, job: Job) -> set[int]:
        """Item ids of ``job`` whose message waits in its Redis queue (a list of JSON
        messages, each with its task id in ``headers.id``). Messages a worker has
        reserved are not in it: the reconciler only asks about items queued long ago."""
        if not job.queue:
            return set()
        found: set[int] = set()
        prefix = f"{job.kind}-{job.id}-"
        with self.app.connection_for_read() as conn:
            client = conn.default_channel.client
            key = priority_queue(job.queue, job.priority)
            start = 0
            while chunk := client.lrange(key, start, start + WAITING_CHUNK - 1):  # not 10^5 messages at once
                for raw in chunk:
                    tid = _task_id_of(raw)
                    if tid and tid.startswith(prefix) and (item := item_of_task(tid)) is not None:
                        found.add(item)
                start += WAITING_CHUNK
        return found


#: messages read from a Redis queue at a time when looking for an item's message
WAITING_CHUNK = 1000


def _task_id_of(raw: bytes | str, unacked: bool = False) -> str | None:
    """The task id in a raw Redis message (``unacked``: kombu's ``[message, exchange, key]``)."""
    try:
        doc = json.loads(raw)
        return str((doc[0] if unacked else doc)["headers"]["id"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None
