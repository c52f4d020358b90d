"""Candidate RLE: every candidate as a COCO RLE at the working size, in the store.

By default only the chosen mask is written as a full-resolution PNG; the other
candidates live in ``candidate.rle`` (``mask_path`` empty) and exports and reports
read them from there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("candidate") as batch:
        batch.add_column(sa.Column("rle", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidate") as batch:
        batch.drop_column("rle")
