"""The queue's additions: the queue a job's items go to, and items indexed by (job, status).

``job.queue`` keeps the queue chosen at submission (``extract.gpu``, or
``extract.cpu`` with ``--device-class cpu``) so resumes go to the same one; the
index serves "pending items of job J", asked once per enqueued batch.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("queue", sa.String(64), nullable=True))
    op.create_index("ix_item_job_status", "item", ["job_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_item_job_status", table_name="item")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("queue")
