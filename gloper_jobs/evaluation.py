"""Evaluation jobs: score the masks an extract job stored against the labels, without recomputing.

An evaluate job has one item per labelled, finished photo of its source extract
job (``job.params["source_job"]``). Scoring an item reads the source item's
candidate PNGs (``HxW bool`` at the photo's size) and its label, computes Dice at
``job.eval_size`` and records candidate rows on the evaluate item that point at
the source's mask files. Masks are scored as stored (resized from the photo's
size), so figures can differ in the third decimal from those an extract job
computed on its working-size masks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, col, select

from gloper_jobs.exceptions import JobNotFoundError, LabelError
from gloper_jobs.labels import load_label
from gloper_jobs.metrics import scores_at
from gloper_jobs.outputs import read_mask
from gloper_jobs.store.models import Candidate, Item, ItemStatus, Job, JobKind
from gloper_jobs.store.repository import CandidateRecord


@dataclass(frozen=True)
class Scored:
    """An evaluate item's result: its candidates (scored) and what the source item recorded."""

    candidates: list[CandidateRecord]
    source: Item
    seconds: float


def source_job_id(job: Job) -> int:
    """The extract job an evaluate job scores."""
    source = job.params.get("source_job") if job.kind == JobKind.evaluate.value else None
    if not isinstance(source, int):
        raise JobNotFoundError(f"job {job.id} is not an evaluate job with a source_job")
    return source


def labelled_done_items(session: Session, extract_job_id: int) -> list[Item]:
    """The source job's finished items that have a label, in path order."""
    return list(session.exec(select(Item).where(
        Item.job_id == extract_job_id, Item.status == ItemStatus.done.value, col(Item.label_path).is_not(None),
    ).order_by(col(Item.rel_path))).all())


def score_item(session: Session, job: Job, item: Item) -> Scored:
    """Score the stored masks of ``item``'s source item against ``item.label_path``.

    Raises :class:`LabelError` for an unreadable label and ``FileNotFoundError``
    when a mask file is gone.
    """
    t0 = time.perf_counter()
    source = session.exec(select(Item).where(Item.job_id == source_job_id(job),
                                             Item.rel_path == item.rel_path)).first()
    if source is None or source.status != ItemStatus.done.value:
        raise JobNotFoundError(f"{item.rel_path}: no finished item in extract job {source_job_id(job)}")
    if not item.label_path:
        raise LabelError(f"{item.rel_path} has no label to score against")
    label = load_label(Path(item.label_path))
    cands = session.exec(select(Candidate).where(Candidate.item_id == source.id)
                         .order_by(col(Candidate.name))).all()
    records = []
    for c in cands:
        mask = read_mask(Path(c.mask_path))
        records.append(CandidateRecord(
            name=c.name, mask_path=c.mask_path, is_choice=c.is_choice, derived=c.derived,
            pattern_fraction=float(mask.mean()), scores=scores_at(mask, label, job.eval_size).as_dict(),
        ))
    return Scored(records, source, time.perf_counter() - t0)
