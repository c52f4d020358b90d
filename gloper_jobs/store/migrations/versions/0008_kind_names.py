"""Job kinds renamed: the calibration sweep ``train`` -> ``calibrate``, then the dataset model
``train_model`` -> ``train``.

A job's key hashes its kind, so each renamed job gets the key the same submission
computes now (resubmitting finds it instead of recording a second job); a key this
migration cannot reproduce from the job's columns is left as it was. A calibration
job's queue follows its kind (``train.gpu`` -> ``calibrate.gpu``); the dataset model's
jobs were on ``train.*`` already.

Messages already in Redis carry the old task names: upgrade with the queues drained,
or let the reconciler (or ``gloper resume JOB``) publish the items again under the new
names; the item's lease drops the duplicate.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"

job = sa.table(
    "job",
    sa.column("id", sa.Integer()), sa.column("key", sa.String()), sa.column("kind", sa.String()),
    sa.column("dataset", sa.Text()), sa.column("method", sa.String()), sa.column("params", sa.JSON()),
    sa.column("foreground_model", sa.String()), sa.column("eval_size", sa.Integer()),
    sa.column("source", sa.Text()), sa.column("queue", sa.String()),
)


def _key(kind: str, row: Any) -> str:
    """gloper_jobs.store.repository.JobSpec.key as of this revision."""
    identity = {"method": row.method, "params": row.params, "foreground_model": row.foreground_model,
                "eval_size": row.eval_size, **({"source": row.source} if row.source else {})}
    blob = json.dumps({"kind": kind, "dataset": row.dataset, **identity}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _rename(old: str, new: str, queue_prefix: tuple[str, str] | None = None) -> None:
    bind = op.get_bind()
    for row in bind.execute(sa.select(job).where(job.c.kind == old)).all():
        values: dict[str, Any] = {"kind": new}
        if row.key == _key(old, row):
            values["key"] = _key(new, row)
        if queue_prefix and row.queue and row.queue.startswith(queue_prefix[0]):
            values["queue"] = queue_prefix[1] + row.queue[len(queue_prefix[0]):]
        bind.execute(sa.update(job).where(job.c.id == row.id).values(**values))


def upgrade() -> None:
    _rename("train", "calibrate", ("train.", "calibrate."))
    _rename("train_model", "train")


def downgrade() -> None:
    _rename("train", "train_model")
    _rename("calibrate", "train", ("calibrate.", "train."))
