"""The result store: tables, migrations and the operations on them."""

from gloper_jobs.store.db import Store
from gloper_jobs.store.models import (
    Calibration,
    Candidate,
    Item,
    ItemStatus,
    Job,
    JobStatus,
    Model,
    ModelStatus,
)

__all__ = ["Calibration", "Candidate", "Item", "ItemStatus", "Job", "JobStatus", "Model", "ModelStatus", "Store"]
