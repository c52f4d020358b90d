"""The registry of job kinds: a plain mapping from kind name to its :class:`JobKind`.

Adding a kind is one module (a :class:`~gloper_jobs.jobs.kinds.base.JobKind`
subclass) and one line here; its Celery task, its queues and its ``gloper submit``
choice follow from this mapping.
"""

from __future__ import annotations

from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.kinds.base import JobKind, Submission, SubmitRequest
from gloper_jobs.jobs.kinds.evaluate import EvaluateKind
from gloper_jobs.jobs.kinds.extract import ExtractKind
from gloper_jobs.jobs.kinds.train import TrainKind
from gloper_jobs.jobs.kinds.train_model import TrainModelKind

#: kind name -> the kind (stateless; one instance each)
KINDS: dict[str, JobKind] = {
    ExtractKind.name: ExtractKind(),
    EvaluateKind.name: EvaluateKind(),
    TrainKind.name: TrainKind(),
    TrainModelKind.name: TrainModelKind(),
}


def get_kind(name: str) -> JobKind:
    """The kind registered as ``name``; :class:`ConfigurationError` lists the valid ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigurationError(f"job kind {name!r}: use one of {', '.join(KINDS)}") from None


__all__ = ["KINDS", "JobKind", "SubmitRequest", "Submission", "get_kind"]
