"""A job's identity: :func:`job_spec`, the one place a :class:`JobSpec` is made.

Every kind records its job with it (:mod:`gloper_jobs.jobs.kinds`), the calibration with
its grid (:mod:`gloper_jobs.jobs.calibration`): the method's parameters validated as a
worker will build them, the result-determining ones hashed into the job's key. Nothing is
built and no weights load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gloper_jobs.store.repository import JobSpec

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.settings import Settings


def job_spec(settings: Settings, dataset: str | Path, method: str, profile: str | None,
             params: dict[str, Any] | None, foreground: bool, kind: str = "extract", *,
             session: Session | None = None) -> JobSpec:
    """The identity of a job: the method's parameters are validated as a worker will build
    them (:func:`~gloper_jobs.methods.registry.method_params`: a dataset model's metadata is
    read; nothing is built, no weights load); the result-determining ones are the key. A
    model given by its name in the store is looked up in ``session``. The one place a spec is made."""
    from gloper_jobs.methods.registry import method_params, portable_model
    from gloper_jobs.storage import is_url

    identity = method_params(method, settings, profile, params, session).identity()
    if reference := (params or {}).get("model"):
        # a file, or a URL every worker resolves to its own cached copy (not the submitter's)
        identity["model"] = portable_model(str(reference), session)
    return JobSpec(
        kind=kind, dataset=str(dataset).rstrip("/") if is_url(dataset) else str(Path(dataset).resolve()),
        method=method, params=identity, profile=profile,
        foreground_model=settings.foreground_model if foreground else "none",
        eval_size=settings.eval_size, results_root=settings.results_root,
        foreground_rim=settings.foreground_rim if foreground else 0.0,
    )
