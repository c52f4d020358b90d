"""Names of the distributed run's queues: one per job kind and device class.

Plain names only (this library never imports Celery): ``extract.gpu``,
``evaluate.cpu``. A method's ``device_class`` picks the default class.
"""

from __future__ import annotations

from gloper_jobs.defaults import JOB_KINDS
from gloper_jobs.exceptions import ConfigurationError

DEVICE_CLASSES = ("cpu", "gpu")

#: the Celery task name of each job kind
TASK_NAMES = {kind: f"gloper.{kind}" for kind in JOB_KINDS}


def queue_name(kind: str, device_class: str) -> str:
    """The queue of a job kind on a device class: ``<kind>.<device class>``, e.g. ``extract.gpu``."""
    if kind not in JOB_KINDS:
        raise ConfigurationError(f"job kind {kind!r}: use one of {', '.join(JOB_KINDS)}")
    if device_class not in DEVICE_CLASSES:
        raise ConfigurationError(f"device class {device_class!r}: use one of {', '.join(DEVICE_CLASSES)}")
    return f"{kind}.{device_class}"


def queues_for(device_class: str) -> list[str]:
    """Every queue a worker of ``device_class`` consumes by default."""
    return [queue_name(kind, device_class) for kind in JOB_KINDS]


def all_queues() -> list[str]:
    return [queue_name(k, d) for k in JOB_KINDS for d in DEVICE_CLASSES]
