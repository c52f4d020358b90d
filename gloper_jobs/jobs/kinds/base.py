"""What a job kind is: how its job is recorded, how one item runs, what happens when it drains.

Every kind (extract, evaluate, calibrate, train) is one module with one :class:`JobKind`
subclass and one line in :data:`gloper_jobs.jobs.kinds.KINDS`. A kind owns its
name, its queues (``<name>.<device class>``), its task's time limits and its
``gloper submit`` options; the Celery tasks, the workers' queues and the CLI's
``submit`` subcommands are generated from the registry. The embedded run
(:mod:`gloper_jobs.jobs.runner`) and the queue (:mod:`gloper_jobs.jobs.execution`)
both run an item as ``KINDS[job.kind].run_item`` and record what it returns through
:mod:`gloper_jobs.jobs.recording`. Kinds never import each other: what two kinds
share lives in a module of its own (:mod:`gloper_jobs.jobs.calibration`).

Heavy modules (torch, the methods) are imported inside the methods, never at
import time: the worker's main process and the launcher import this registry.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlmodel import Session

from gloper_jobs import defaults
from gloper_jobs.exceptions import ConfigurationError, InvalidParameterError, StorageError
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Item, Job

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store


@dataclass(frozen=True)
class SubmitOption:
    """A ``gloper submit KIND`` option that only some kinds take: ``--<name>`` (``_`` as ``-``).

    ``name`` is a :class:`SubmitRequest` field (``grid``, ``model``, ...) or, for an
    option no built-in kind has, a key of :attr:`SubmitRequest.extra`.
    """

    name: str
    help: str
    metavar: str
    type: type = str  # str or int
    multiple: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


#: ``--manifest``, taken by the kinds that list photos (extract, evaluate)
MANIFEST = SubmitOption(
    "manifest", metavar="FILE.csv|FILE.parquet",
    help="List the photos in a table (column path, relative to DATASET; optional species, identity, "
         "label_path, image_id; a wildlife-datasets metadata table works as it is) instead of scanning. "
         "Local or s3://.")

#: the :class:`SubmitRequest` fields that are kind-specific options (see :attr:`JobKind.submit_options`)
KIND_OPTION_FIELDS = {"grid": (), "settings_from": None, "model": None, "manifest": None}


@dataclass(frozen=True)
class SubmitRequest:
    """What a submitter asks of a kind: the dataset, the method and its settings.

    ``grid``, ``settings_from``, ``model`` and ``manifest`` are options only some kinds take
    (each kind lists its own in :attr:`JobKind.submit_options`); ``extra`` holds the options of
    kinds that need others. ``on_device`` sends the items to ``cpu`` or ``gpu`` workers
    instead of the method's own class.
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
    extra: dict[str, Any] = field(default_factory=dict)  # options no SubmitRequest field holds

    def options_given(self) -> set[str]:
        """The kind-specific options this request sets (left at their defaults otherwise)."""
        named = {f.name for f in fields(self)
                 if f.name in KIND_OPTION_FIELDS and getattr(self, f.name) != KIND_OPTION_FIELDS[f.name]}
        return named | {k for k, v in self.extra.items() if v not in (None, ())}


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
    """One kind of job. Subclasses set :attr:`name` and :attr:`summary` and implement the steps.

    Everything else about a kind is here too, so nothing outside its module names it:
    its queues (:meth:`queue_name`), its task's :attr:`time_limits` and its
    :attr:`submit_options`.
    """

    #: the kind's name: ``job.kind`` in the store, ``gloper submit NAME``, task ``gloper.NAME``,
    #: queues ``NAME.<device class>``
    name: ClassVar[str]
    #: one line for ``gloper submit --help``
    summary: ClassVar[str]
    #: the ``gloper submit NAME`` options only this kind (and those listing the same one) takes
    submit_options: ClassVar[tuple[SubmitOption, ...]] = ()
    #: ``(soft, hard)`` seconds for one task of this kind; ``GLOPER_<NAME>_[SOFT_]TIME_LIMIT``
    #: overrides them for any kind (:meth:`gloper_jobs.settings.Settings.time_limit_overrides`)
    time_limits: ClassVar[tuple[int, int]] = defaults.TASK_TIME_LIMITS
    #: whether the kind reads an ``s3://`` dataset prefix itself (workers stream each photo)
    remote_datasets: ClassVar[bool] = False

    @property
    def options(self) -> frozenset[str]:
        """The names of :attr:`submit_options`."""
        return frozenset(o.name for o in self.submit_options)

    @classmethod
    def queue_name(cls, device_class: str) -> str:
        """This kind's queue on a device class: ``<name>.<device class>``, e.g. ``extract.gpu``."""
        if device_class not in defaults.DEVICE_CLASSES:
            raise ConfigurationError(
                f"device class {device_class!r}: use one of {', '.join(defaults.DEVICE_CLASSES)}")
        return f"{cls.name}.{device_class}"

    def check_request(self, request: SubmitRequest) -> None:
        """Refuse a request this kind cannot take before anything is written: options that
        belong to another kind are named with the kind they belong to."""
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

    def after_drained(self, store: Store, job: Job) -> None:
        """Called after the transaction that drained the job committed: long follow-up work in
        steps of its own (an extract job re-points its photos to the species' calls)."""
        return None


def device_class(method: str) -> str:
    """``cpu`` or ``gpu``: which queues a method's items go to by default."""
    from gloper_jobs.methods.registry import get_segmenter_class

    return get_segmenter_class(method).device_class


def warn_if_another_rim_was_meant(session: Session, job: Job) -> None:
    """A job just made that an unfinished one matches but for the foreground's rim (begun
    before the rim's default changed, or under another ``GLOPER_FOREGROUND_RIM``): warn, naming
    the setting that resumes that one instead."""
    for other in repo.unfinished_with_other_rim(session, job):
        warnings.warn(
            f"job {other.id} on the same photos and settings is unfinished and trims a foreground rim of "
            f"{other.foreground_rim:g} (job {job.id}: {job.foreground_rim:g}); to go on with job {other.id} "
            f"instead, stop and run the same command with GLOPER_FOREGROUND_RIM={other.foreground_rim:g}",
            UserWarning, stacklevel=3)
