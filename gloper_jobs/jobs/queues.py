"""Names of the distributed run's queues and tasks: one per job kind and device class.

Plain names only (this library never imports Celery): ``extract.gpu``,
``evaluate.cpu``, task ``gloper.extract``. Each kind names its own queues
(:meth:`~gloper_jobs.jobs.kinds.base.JobKind.queue_name`); this module lists them
over the registry :data:`gloper_jobs.jobs.kinds.KINDS`, which imports nothing from here.
"""

from __future__ import annotations

from gloper_jobs.defaults import DEVICE_CLASSES, PRIORITIES
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.kinds import KINDS, get_kind

__all__ = ["DEVICE_CLASSES", "all_queues", "check_priority", "priority_queue", "queue_name", "queues_for",
           "task_name", "task_names", "with_priorities"]


def task_name(kind: str) -> str:
    """The Celery task name of a job kind: ``gloper.<kind>``."""
    return f"gloper.{kind}"


def task_names() -> dict[str, str]:
    """Kind name -> its Celery task's name, for every registered kind."""
    return {kind: task_name(kind) for kind in KINDS}


def queue_name(kind: str, device_class: str) -> str:
    """The queue of a job kind on a device class: ``<kind>.<device class>``, e.g. ``extract.gpu``."""
    return get_kind(kind).queue_name(device_class)


def queues_for(device_class: str) -> list[str]:
    """Every queue a worker of ``device_class`` consumes by default."""
    return list(dict.fromkeys(kind.queue_name(device_class) for kind in KINDS.values()))


def all_queues() -> list[str]:
    """Every queue of every kind, kind by kind (``extract.cpu``, ``extract.gpu``, ...)."""
    return list(dict.fromkeys(kind.queue_name(d) for kind in KINDS.values() for d in DEVICE_CLASSES))


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
