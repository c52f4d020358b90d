"""What a job kind is: how its job is recorded, how one item runs, what happens when it drains.

Every kind (extract, evaluate, train) is one module with one :class:`JobKind`
subclass and one line in :data:`gloper_jobs.jobs.kinds.KINDS`. The embedded run
(:mod:`gloper_jobs.jobs.runner`) and the queue (:mod:`gloper_jobs.jobs.execution`)
both run an item as ``KINDS[job.kind].run_item`` and record what it returns through
:mod:`gloper_jobs.jobs.recording`; the Celery tasks and the CLI's choices are
generated from the registry.

Heavy modules (torch, the methods) are imported inside the methods, never at
import time: the worker's main process and the launcher import this registry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlmodel import Session

from gloper_jobs import defaults
from gloper_jobs.exceptions import InvalidParameterError, StorageError
from gloper_jobs.store.models import Item, Job
from gloper_jobs.store.repository import JobSpec

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store


@dataclass(frozen=True)
class SubmitRequest:
    """What a submitter asks of a kind: the dataset, the method and its settings.

    ``grid``, ``settings_from`` and ``model`` are options only some kinds take (each kind lists
    its own in :attr:`JobKind.options`); ``on_device`` sends the items to ``cpu`` or
    ``gpu`` workers instead of the method's own class.
    """

    dataset: str | Path  # a folder, or (kinds with ``remote_datasets``) an ``s3://`` prefix
    method: str = defaults.DEFAULT_METHOD
    profile: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    foreground: bool = True
    on_device: str | None = None
    grid: tuple[str, ...] = ()
    settings_from: int | None = None
    model: str | None = None
    manifest: str | None = None  # a CSV/Parquet listing the photos (gloper_jobs.manifest)
    origin: str | None = None  # the s3:// URL ``dataset`` was staged from (the embedded run)

    def options_given(self) -> set[str]:
        """The kind-specific options this request sets (left at their defaults otherwise)."""
        optional = {"grid": (), "settings_from": None, "model": None, "manifest": None}
        return {f.name for f in fields(self) if f.name in optional and getattr(self, f.name) != optional[f.name]}


@dataclass
class Submission:
    """A recorded job: whether it is new, how many items it has and how many were enqueued."""

    job: Job
    created: bool
    added: int
    enqueued: int = 0
    requeued_stale: int = 0
    #: what the scan left out and why (symlinks leading outside the dataset root)
    skipped: list[str] = field(default_factory=list)


class JobKind(ABC):
    """One kind of job. Subclasses set :attr:`name` and implement the three steps."""

    #: the kind's name: ``job.kind`` in the store, ``gloper submit NAME``, queue ``NAME.<class>``
    name: ClassVar[str]
    #: one line for ``gloper submit --help``
    summary: ClassVar[str]
    #: kind-specific :class:`SubmitRequest` options this kind accepts
    options: ClassVar[frozenset[str]] = frozenset()
    #: whether the kind reads an ``s3://`` dataset prefix itself (workers stream each photo)
    remote_datasets: ClassVar[bool] = False
    #: the kind whose queues this kind's tasks go to (None: its own, ``<name>.<class>``)
    queues_of: ClassVar[str | None] = None

    @property
    def queue_kind(self) -> str:
        """The kind name in this kind's queue names (its own, or :attr:`queues_of`)."""
        return self.queues_of or self.name

    def check_request(self, request: SubmitRequest) -> None:
        """Refuse options that belong to another kind, naming the kind they belong to."""
        from gloper_jobs.jobs.kinds import KINDS
        from gloper_jobs.storage import is_url

        if is_url(request.dataset) and request.origin is None and not self.remote_datasets:
            readers = " or ".join(f"`submit {k.name}`" for k in KINDS.values() if k.remote_datasets)
            raise StorageError(f"{request.dataset}: `submit {self.name}` reads photos from a folder; only "
                               f"{readers} reads an s3:// prefix. Copy the photos to a folder its workers "
                               "can read, or run it on one machine with `gloper run`")
        for option in sorted(request.options_given() - self.options):
            owners = [k.name for k in KINDS.values() if option in k.options]
            flag = "--" + option.replace("_", "-")
            where = " or ".join(f"`submit {o}`" for o in owners) or "no job kind"
            raise InvalidParameterError(f"{flag} belongs to {where}, not `submit {self.name}`")

    @abstractmethod
    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        """Record the job and its items (idempotent: the same request adds no rows)."""

    @abstractmethod
    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        """Do one item's work (no store writes of its result: the caller records it)."""

    def on_drained(self, session: Session, job: Job) -> None:
        """Called once the job has nothing pending, queued or running (in that transaction)."""
        return None


def job_spec(settings: Settings, dataset: str | Path, method: str, profile: str | None,
             params: dict[str, Any] | None, foreground: bool, kind: str = "extract") -> JobSpec:
    """The identity of a job: the method is built (no weights load) to validate its
    parameters; the result-determining ones are the key. The one place a spec is made."""
    from gloper_jobs.methods.registry import build_segmenter, portable_model
    from gloper_jobs.storage import is_url

    segmenter = build_segmenter(method, settings, profile, params)
    identity = segmenter.params.identity()
    if (params or {}).get("model") and is_url(url := portable_model(str((params or {})["model"]), settings)):
        identity["model"] = url  # every worker resolves the URL to its own cached copy
    return JobSpec(
        kind=kind, dataset=str(dataset).rstrip("/") if is_url(dataset) else str(Path(dataset).resolve()),
        method=method, params=identity, profile=profile,
        foreground_model=settings.foreground_model if foreground else "none",
        eval_size=settings.eval_size, results_root=settings.results_root,
    )


def device_class(method: str) -> str:
    """``cpu`` or ``gpu``: which queues a method's items go to by default."""
    from gloper_jobs.methods.registry import get_segmenter_class

    return get_segmenter_class(method).device_class

