"""The result store's tables (SQLModel), the same on SQLite and PostgreSQL.

One row per job, per item (photo of a job) and per candidate mask of an item.
Uniqueness makes every write idempotent: ``job.key`` (kind, dataset, method,
settings), ``(item.job_id, item.rel_path)`` and ``(candidate.item_id, candidate.name)``.
The schema is created by Alembic migrations (``store/migrations``), never by
``create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    """A job's state; ``done`` means no item is pending or running."""

    pending = "pending"
    running = "running"
    done = "done"
    cancelled = "cancelled"


class ItemStatus(StrEnum):
    """An item's state. ``failed`` keeps the error and traceback."""

    pending = "pending"
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


class Job(SQLModel, table=True):
    """A dataset-wide run of one method with one set of settings."""

    __tablename__ = "job"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, unique=True, max_length=64)
    kind: str = Field(default="extract", max_length=16)  # a name in gloper_jobs.jobs.kinds.KINDS
    dataset: str = Field(sa_column=Column(Text, nullable=False))
    method: str = Field(max_length=64)
    profile: str | None = Field(default=None, max_length=32)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    foreground_model: str = Field(default="u2netp", max_length=32)
    #: the band along the foreground's outline no mask keeps, as a share of the mask's side
    #: (``GLOPER_FOREGROUND_RIM`` when the job was made; 0 for jobs made before it existed)
    foreground_rim: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})
    eval_size: int = 256
    status: str = Field(default=JobStatus.pending.value, max_length=16, index=True)
    results_dir: str = Field(sa_column=Column(Text, nullable=False))
    n_items: int = 0
    queue: str | None = Field(default=None, max_length=64)  # the distributed run's queue
    #: ``urgent``, ``normal`` or ``bulk``: which of the queue's priority levels its items go to
    priority: str = Field(default="normal", max_length=16, sa_column_kwargs={"server_default": "normal"})
    #: where the items were listed when not by scanning ``dataset``: a manifest and its digest, a URL
    source: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: the polarity each species' photos voted for and the user's overrides (jobs.polarity)
    species_polarity: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    #: what the folder scan left out (symlinks out of the root): ``{"skipped": [...], "n_skipped": N}``
    scan_notes: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Item(SQLModel, table=True):
    """One photo of a job, its state and (once done) how it was made."""

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("job_id", "rel_path", name="uq_item_job_rel_path"),
        Index("ix_item_job_status", "job_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    rel_path: str = Field(sa_column=Column(Text, nullable=False))
    path: str = Field(sa_column=Column(Text, nullable=False))
    species: str = Field(max_length=128, index=True)
    label_path: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    identity: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # the individual
    image_id: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # the manifest's id
    status: str = Field(default=ItemStatus.pending.value, max_length=16, index=True)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    traceback: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: what the method reported about how it made the masks (seconds, losses, choice reasons)
    info: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    attempts: int = 0
    deliveries: int = 0
    width: int | None = None
    height: int | None = None
    foreground_fraction: float | None = None
    foreground_fallback: bool | None = None
    choice: str | None = Field(default=None, max_length=64)
    seconds: float | None = None
    host: str | None = Field(default=None, max_length=255)
    device: str | None = Field(default=None, max_length=64)
    worker: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    #: when its message was last published (the reconciler re-publishes stranded ones)
    queued_at: datetime | None = None
    #: the worker process holding the item (``<node>:<pid>``) and until when; see deliveries.claim
    lease_owner: str | None = Field(default=None, max_length=255)
    lease_expires_at: datetime | None = None


class Candidate(SQLModel, table=True):
    """One named mask of an item, where it was written, and its scores if labelled.

    ``mask_path`` is the full-resolution PNG, or ``""`` when only ``rle`` holds the mask:
    a COCO RLE (``{"size": [h, w], "counts": str}``) at the method's working size, which
    readers resize to the photo (:func:`gloper_jobs.data.outputs.candidate_mask`).
    """

    __tablename__ = "candidate"
    __table_args__ = (UniqueConstraint("item_id", "name", name="uq_candidate_item_name"),)

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    name: str = Field(max_length=64)
    mask_path: str = Field(sa_column=Column(Text, nullable=False))
    rle: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    is_choice: bool = False
    derived: bool = False
    pattern_fraction: float = 0.0
    dice: float | None = None
    iou: float | None = None
    precision: float | None = None
    recall: float | None = None


class Calibration(SQLModel, table=True):
    """The best GloPER settings for one species, found by a calibration job."""

    __tablename__ = "calibration"
    __table_args__ = (UniqueConstraint("job_id", "species", name="uq_calibration_job_species"),)

    species: str = Field(max_length=128)
    job_id: int = Field(foreign_key="job.id", index=True)
    id: int | None = Field(default=None, primary_key=True)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    dice: float = 0.0
    photos: int = 0
    settings_tried: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class ModelStatus(StrEnum):
    """A dataset model's training state: ``training`` until its last step is checkpointed."""

    training = "training"
    done = "done"


class Model(SQLModel, table=True):
    """A trained (or training) dataset-level GloPER model, by name (``--param model=NAME``).

    ``checkpoint_path`` is the last atomically written checkpoint, ``sha256`` its
    checksum; ``step`` its step and ``losses`` the loss of every step up to it.
    """

    __tablename__ = "model"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=128)
    dataset: str = Field(sa_column=Column(Text, nullable=False))
    method: str = Field(default="gloper", max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=ModelStatus.training.value, max_length=16)
    step: int = 0
    steps: int = 0
    losses: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    photos: int = 0
    seconds: float = 0.0
    checkpoint_path: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str | None = Field(default=None, max_length=64)
    job_id: int | None = Field(default=None, foreign_key="job.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
