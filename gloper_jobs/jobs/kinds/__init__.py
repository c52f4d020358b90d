"""The registry of job kinds: a plain mapping from kind name to its :class:`JobKind`.

Adding a kind is one module (a :class:`~gloper_jobs.jobs.kinds.base.JobKind`
subclass: its name, queues, time limits and submit options) and one line here; its
Celery task, its queues and its ``gloper submit`` subcommand follow from this mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.kinds.base import JobKind, Submission, SubmitOption, SubmitRequest
from gloper_jobs.jobs.kinds.calibrate import CalibrateKind
from gloper_jobs.jobs.kinds.evaluate import EvaluateKind
from gloper_jobs.jobs.kinds.extract import ExtractKind
from gloper_jobs.jobs.kinds.train import TrainKind

if TYPE_CHECKING:
    from gloper_jobs.settings import Settings

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


def time_limits(settings: Settings, kind: str) -> tuple[int, int]:
    """``(soft, hard)`` seconds for one task of job kind ``kind``: the kind's own
    (:attr:`~gloper_jobs.jobs.kinds.base.JobKind.time_limits`), each overridden by its
    ``GLOPER_<KIND>_[SOFT_]TIME_LIMIT`` where that is set (any kind: no setting to add).
    :class:`ConfigurationError` when the soft limit is not below the hard one.
    """
    own_soft, own_hard = get_kind(kind).time_limits
    soft_set, hard_set = settings.time_limit_overrides(kind)
    soft = int(own_soft if soft_set is None else soft_set)
    hard = int(own_hard if hard_set is None else hard_set)
    if soft >= hard:
        raise ConfigurationError(f"{kind}_soft_time_limit ({soft}) must be below {kind}_time_limit ({hard})")
    return soft, hard


def check_time_limits(settings: Settings) -> None:
    """Every kind's limits in order, and a Redis visibility timeout that cannot redeliver a task
    still running.

    Redis hands an unacknowledged task to another worker after ``visibility_timeout``
    seconds (celery#5935): it must exceed the longest hard time limit plus the longest
    retry delay. Raises :class:`ConfigurationError` saying what to set.
    """
    longest = max(time_limits(settings, k)[1] for k in KINDS) + settings.retry_backoff_max
    if settings.visibility_timeout <= longest:
        raise ConfigurationError(
            f"GLOPER_VISIBILITY_TIMEOUT={settings.visibility_timeout} s must exceed the longest hard "
            f"time limit plus GLOPER_RETRY_BACKOFF_MAX ({longest} s), or Redis would hand running "
            f"tasks to a second worker; set GLOPER_VISIBILITY_TIMEOUT={longest * 2}"
        )


__all__ = ["KINDS", "JobKind", "SubmitOption", "SubmitRequest", "Submission", "check_time_limits", "get_kind",
           "time_limits"]
