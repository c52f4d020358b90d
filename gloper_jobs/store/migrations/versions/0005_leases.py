"""Leases and publish marks: an item's exclusive claim, when it was queued, a job's priority.

- ``item.lease_owner`` / ``item.lease_expires_at``: the worker process running the
  item and until when its claim holds (the heartbeat extends it). A second delivery
  while the lease is live is dropped, not run and not counted.
- ``item.queued_at``: when the item's message was (last) published, so the reconciler
  can find queued items whose message was stranded.
- ``job.priority``: ``urgent``, ``normal`` or ``bulk``; each level has its own queues.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("priority", sa.String(length=16), nullable=False, server_default="normal"))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("priority")
    with op.batch_alter_table("item") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
