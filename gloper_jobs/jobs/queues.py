"""Names of the distributed run's queues and tasks: one per job kind and device class.

Plain names only (this library never imports Celery): ``extract.gpu``,
``evaluate.cpu``, task ``gloper.extract``. A method's ``device_class`` picks the
default class; the kinds come from :data:`gloper_jobs.jobs.kinds.KINDS`.
"""

from __future__ import annotations

from gloper_jobs.defaults import PRIORITIES
from gloper_jobs.exceptions import ConfigurationError

DEVICE_CLASSES = ("cpu", "gpu")


def _kinds() -> list[str]:
    from gloper_jobs.jobs.kinds import KINDS  # the kinds import this module's queue_name

    return list(KINDS)


def _queue_kinds() -> list[str]:
    """The kinds that own queues (a kind may send its tasks to another kind's queues)."""
    from gloper_jobs.jobs.kinds import KINDS

    return list(dict.fromkeys(kind.queue_kind for kind in KINDS.values()))


def task_name(kind: str) -> str:
    """The Celery task name of a job kind: ``gloper.<kind>``."""
    return f"gloper.{kind}"


def task_names() -> dict[str, str]:
    """Kind name -> its Celery task's name, for every registered kind."""
    return {kind: task_name(kind) for kind in _kinds()}


def queue_name(kind: str, device_class: str) -> str:
    """The queue of a job kind on a device class: ``<kind>.<device class>``, e.g. ``extract.gpu``."""
    if kind not in _queue_kinds():
        raise ConfigurationError(f"job kind {kind!r}: use one of {', '.join(_queue_kinds())}")
    if device_class not in DEVICE_CLASSES:
        raise ConfigurationError(f"device class {device_class!r}: use one of {', '.join(DEVICE_CLASSES)}")
    return f"{kind}.{device_class}"


def queues_for(device_class: str) -> list[str]:
    """Every queue a worker of ``device_class`` consumes by default."""
    return [queue_name(kind, device_class) for kind in _queue_kinds()]


def all_queues() -> list[str]:
    return [queue_name(k, d) for k in _queue_kinds() for d in DEVICE_CLASSES]


def check_priority(priority: str) -> str:
    """``priority`` if it is a known level; :class:`ConfigurationError` otherwise."""
    if priority not in PRIORITIES:
        raise ConfigurationError(f"priority {priority!r}: use one of {', '.join(PRIORITIES)}")
    return priority


def priority_queue(queue: str, priority: str) -> str:
    """The queue a job's items are published to: its queue for ``normal``, else
    ``<queue>.<priority>`` (``extract.cpu.urgent``, ``extract.cpu.bulk``).

    Separate queues per level, consumed in order, rather than Redis message
    priorities, which Celery maps onto one key per step with known bugs (celery#8967).
    """
    check_priority(priority)
    return queue if priority == "normal" else f"{queue}.{priority}"


def with_priorities(queues: list[str]) -> list[str]:
    """Every level of ``queues``, highest first: all urgent queues, then the normal ones,
    then the bulk ones. A worker lists them in this order and Redis's BRPOP takes from
    the first non-empty one (the transport's ``priority`` queue order)."""
    return [priority_queue(q, p) for p in PRIORITIES for q in queues]
