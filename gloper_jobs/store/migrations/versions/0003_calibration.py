"""Calibration results: the best GloPER settings per species of a training job."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "calibration",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("job.id"), nullable=False),
        sa.Column("species", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=False),
        sa.Column("photos", sa.Integer(), nullable=False),
        sa.Column("settings_tried", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("job_id", "species", name="uq_calibration_job_species"),
    )
    op.create_index("ix_calibration_job_id", "calibration", ["job_id"])


def downgrade() -> None:
    op.drop_table("calibration")
