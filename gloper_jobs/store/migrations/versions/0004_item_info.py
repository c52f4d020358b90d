"""Item info: what the method reports about how it made an item's masks (JSON).

GloPER's per-size seconds, final losses and (later) engine options, stop steps and
the label-free choice's reasons live here, so a result says how it was produced.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("info", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.drop_column("info")
