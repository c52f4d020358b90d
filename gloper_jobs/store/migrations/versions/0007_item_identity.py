"""Manifest inputs: an item's identity and image id, and where a job's items came from.

A manifest (or a wildlife-datasets metadata table) names each photo's ``identity``
(the individual animal) and ``image_id``; exports carry both. ``job.source`` says
where the items were listed (a manifest file and its digest, an ``s3://`` URL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("identity", sa.Text(), nullable=True))
        batch.add_column(sa.Column("image_id", sa.Text(), nullable=True))
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("source", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("item") as batch:
        batch.drop_column("image_id")
        batch.drop_column("identity")
