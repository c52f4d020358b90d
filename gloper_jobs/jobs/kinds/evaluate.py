"""Evaluation jobs: score the masks an extract job stored against the labels, without recomputing.

An evaluate job has one item per labelled, finished photo of its source extract
job (``job.params["source_job"]``). Scoring an item reads the source item's
candidate PNGs (``HxW bool`` at the photo's size) and its label, computes Dice at
``job.eval_size`` and records candidate rows on the evaluate item that point at
the source's mask files. Masks are scored as stored (resized from the photo's
size), so figures can differ in the third decimal from those an extract job
computed on its working-size masks.

Its items go to ``evaluate.cpu``: scoring reads PNGs and needs no GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sqlmodel import Session, col, select

from gloper_jobs.data.datasets import DatasetItem
from gloper_jobs.data.labels import load_label, shape_mismatch
from gloper_jobs.data.outputs import candidate_mask
from gloper_jobs.exceptions import JobNotFoundError, LabelError
from gloper_jobs.jobs.candidates import CandidateRecord
from gloper_jobs.jobs.kinds.base import (
    MANIFEST,
    JobKind,
    Submission,
    SubmitOption,
    SubmitRequest,
)
from gloper_jobs.jobs.spec import job_spec
from gloper_jobs.scoring.metrics import scores_at
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Candidate, Item, ItemStatus, Job

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Store

#: job.params key of the extract job an evaluate job scores
SOURCE_JOB = "source_job"


@dataclass(frozen=True)
class Scored:
    """An evaluate item's result: its candidates (scored) and what the source item recorded."""

    candidates: list[CandidateRecord]
    source: Item
    seconds: float


def source_job_id(job: Job) -> int:
    """The extract job an evaluate job scores."""
    source = job.params.get(SOURCE_JOB) if job.kind == EvaluateKind.name else None
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
    if source.height and source.width and (why := shape_mismatch(item.label_path, label.shape,
                                                                  (source.height, source.width))):
        raise LabelError(why)
    cands = session.exec(select(Candidate).where(Candidate.item_id == source.id)
                         .order_by(col(Candidate.name))).all()
    records = []
    for c in cands:
        mask = candidate_mask(c.mask_path, c.rle)
        records.append(CandidateRecord(
            name=c.name, mask_path=c.mask_path, rle=c.rle, is_choice=c.is_choice, derived=c.derived,
            pattern_fraction=float(mask.mean()), scores=scores_at(mask, label, job.eval_size).as_dict(),
        ))
    return Scored(records, source, time.perf_counter() - t0)


class EvaluateKind(JobKind):
    """Score an extract job's stored masks against the labels, without segmenting again."""

    name = "evaluate"
    summary = "score the masks the extract job with the same settings stored, against the labels"
    submit_options: ClassVar[tuple[SubmitOption, ...]] = (MANIFEST,)
    time_limits: ClassVar[tuple[int, int]] = (120, 150)  # it only reads PNGs

    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        self.check_request(request)
        return record_evaluate_job(store, settings, Path(request.dataset), request.method, request.profile,
                                   request.params, request.foreground, request.manifest)

    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        from gloper_jobs.jobs.pipeline import ItemOutcome

        with ctx.store.session() as s:
            scored = score_item(s, job, item)
        src = scored.source
        return ItemOutcome(
            candidates=scored.candidates, choice=src.choice or "", seconds=scored.seconds,
            width=src.width or 0, height=src.height or 0, foreground_fraction=src.foreground_fraction,
            foreground_fallback=src.foreground_fallback, device="cpu", note=src.note,
        )


def record_evaluate_job(store: Store, settings: Settings, dataset: Path, method: str,
                        profile: str | None = None, params: dict[str, Any] | None = None,
                        foreground: bool = True, manifest: str | Path | None = None) -> Submission:
    """Record an evaluate job over the extract job with these settings and ``manifest`` (idempotent).

    Its items are the extract job's labelled, finished photos. Raises
    :class:`JobNotFoundError` when no such extract job exists.
    """
    from gloper_jobs.inputs import list_items, source_of

    listed = list_items(Path(dataset), manifest)[1] if manifest is not None else None
    with store.session() as s:
        extract = replace(job_spec(settings, dataset, method, profile, params, foreground, session=s),
                          source=source_of(None, listed))
        source = s.exec(select(Job).where(Job.key == extract.key)).first()
        if source is None or source.id is None:
            raise JobNotFoundError(
                f"no extract job of {method} with these settings on {dataset}: submit it first with "
                "`gloper submit extract` (same --method, --profile and --param)")
        spec = replace(extract, kind=EvaluateKind.name, params={**extract.params, SOURCE_JOB: source.id})
        job, created = repo.get_or_create_job(s, spec)
        todo = [DatasetItem(i.rel_path, Path(i.path), i.species, Path(i.label_path) if i.label_path else None,
                            i.identity, i.image_id)
                for i in labelled_done_items(s, source.id)]
        added = repo.add_items(s, job, todo, batch=settings.submit_batch)
        job.results_dir = source.results_dir  # the masks it scores
        job.queue = EvaluateKind.queue_name("cpu")
        dl.reopen_job(s, job)
    return Submission(job, created, added)
