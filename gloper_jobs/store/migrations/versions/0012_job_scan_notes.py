"""What the scan of a job's photos left out, per job.

``job.scan_notes``: ``{"skipped": [line, ...], "n_skipped": N}``, the symlinks leading
out of the dataset's root that a folder scan did not follow (the first
:data:`~gloper_jobs.defaults.SCAN_NOTES_KEPT` lines and how many there were), so
``gloper report`` names them after the run that found them. Jobs made before it have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("scan_notes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("scan_notes")
