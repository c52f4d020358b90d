"""The result store: tables, migrations and the operations on them."""

from gloper_jobs.store.db import Store
from gloper_jobs.store.models import Candidate, Item, ItemStatus, Job, JobKind, JobStatus

__all__ = ["Candidate", "Item", "ItemStatus", "Job", "JobKind", "JobStatus", "Store"]
