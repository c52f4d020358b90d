"""Names of the distributed run's queues and tasks: one per job kind and device class.

Plain names only (this library never imports Celery): ``extract.gpu``,
``evaluate.cpu``, task ``gloper.extract``. A method's ``device_class`` picks the
default class; the kinds come from :data:`gloper_jobs.jobs.kinds.KINDS`.
"""

from __future__ import annotations

from gloper_jobs.exceptions import ConfigurationError

DEVICE_CLASSES = ("cpu", "gpu")


def _kinds() -> list[str]:
    from gloper_jobs.jobs.kinds import KINDS  # the kinds import this module's queue_name

    return list(KINDS)


def task_name(kind: str) -> str:
    """The Celery task name of a job kind: ``gloper.<kind>``."""
    return f"gloper.{kind}"


def task_names() -> dict[str, str]:
    """Kind name -> its Celery task's name, for every registered kind."""
    return {kind: task_name(kind) for kind in _kinds()}


def queue_name(kind: str, device_class: str) -> str:
    """The queue of a job kind on a device class: ``<kind>.<device class>``, e.g. ``extract.gpu``."""
    if kind not in _kinds():
        raise ConfigurationError(f"job kind {kind!r}: use one of {', '.join(_kinds())}")
    if device_class not in DEVICE_CLASSES:
        raise ConfigurationError(f"device class {device_class!r}: use one of {', '.join(DEVICE_CLASSES)}")
    return f"{kind}.{device_class}"


def queues_for(device_class: str) -> list[str]:
    """Every queue a worker of ``device_class`` consumes by default."""
    return [queue_name(kind, device_class) for kind in _kinds()]


def all_queues() -> list[str]:
    return [queue_name(k, d) for k in _kinds() for d in DEVICE_CLASSES]
