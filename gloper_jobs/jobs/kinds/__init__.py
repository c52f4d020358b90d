"""The registry of job kinds: a plain mapping from kind name to its :class:`JobKind`.

Adding a kind is one module (a :class:`~gloper_jobs.jobs.kinds.base.JobKind`
subclass: its name, queues, time limits and submit options) and one line here; its
Celery task, its queues and its ``gloper submit`` subcommand follow from this mapping.
"""

from __future__ import annotations

from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.kinds.base import JobKind, Submission, SubmitOption, SubmitRequest
from gloper_jobs.jobs.kinds.calibrate import CalibrateKind
from gloper_jobs.jobs.kinds.evaluate import EvaluateKind
from gloper_jobs.jobs.kinds.extract import ExtractKind
from gloper_jobs.jobs.kinds.train import TrainKind

#: kind name -> the kind (stateless; one instance each)
KINDS: dict[str, JobKind] = {
    ExtractKind.name: ExtractKind(),
    EvaluateKind.name: EvaluateKind(),
    CalibrateKind.name: CalibrateKind(),
    TrainKind.name: TrainKind(),
}


def get_kind(name: str) -> JobKind:
    """The kind registered as ``name``; :class:`ConfigurationError` lists the valid ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigurationError(f"job kind {name!r}: use one of {', '.join(KINDS)}") from None


__all__ = ["KINDS", "JobKind", "SubmitOption", "SubmitRequest", "Submission", "get_kind"]
