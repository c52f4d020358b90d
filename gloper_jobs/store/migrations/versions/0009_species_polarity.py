"""Polarity per species: the call each species' photos voted for, stored on the job.

``job.species_polarity`` (JSON, NULL until the job drains): ``{"calls": {species:
{polarity, how, score, margin, photos, disagree}}, "overrides": {species: polarity}}``
(:mod:`gloper_jobs.jobs.polarity`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("species_polarity", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.drop_column("species_polarity")
