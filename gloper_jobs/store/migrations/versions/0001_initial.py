"""Initial schema: job, item, candidate."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("profile", sa.String(32), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("foreground_model", sa.String(32), nullable=False),
        sa.Column("eval_size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("results_dir", sa.Text(), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_job_key", "job", ["key"], unique=True)
    op.create_index("ix_job_status", "job", ["status"])
    op.create_table(
        "item",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(), sa.ForeignKey("job.id"), nullable=False),
        sa.Column("rel_path", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("species", sa.String(128), nullable=False),
        sa.Column("label_path", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("foreground_fraction", sa.Float(), nullable=True),
        sa.Column("foreground_fallback", sa.Boolean(), nullable=True),
        sa.Column("choice", sa.String(64), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("job_id", "rel_path", name="uq_item_job_rel_path"),
    )
    op.create_index("ix_item_job_id", "item", ["job_id"])
    op.create_index("ix_item_species", "item", ["species"])
    op.create_index("ix_item_status", "item", ["status"])
    op.create_table(
        "candidate",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("item_id", sa.Integer(), sa.ForeignKey("item.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("mask_path", sa.Text(), nullable=False),
        sa.Column("is_choice", sa.Boolean(), nullable=False),
        sa.Column("derived", sa.Boolean(), nullable=False),
        sa.Column("pattern_fraction", sa.Float(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=True),
        sa.Column("iou", sa.Float(), nullable=True),
        sa.Column("precision", sa.Float(), nullable=True),
        sa.Column("recall", sa.Float(), nullable=True),
        sa.UniqueConstraint("item_id", "name", name="uq_candidate_item_name"),
    )
    op.create_index("ix_candidate_item_id", "candidate", ["item_id"])


def downgrade() -> None:
    op.drop_table("candidate")
    op.drop_table("item")
    op.drop_table("job")
