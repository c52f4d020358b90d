"""The foreground's rim: the band along the outline that no mask keeps, per job.

``job.foreground_rim`` (a share of the mask's side, ``GLOPER_FOREGROUND_RIM`` when the
job was made). Jobs made before it trimmed nothing and resume as they began: 0. A job
with a rim has it in its key, so a job without one keeps its key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("foreground_rim", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("foreground_rim")
