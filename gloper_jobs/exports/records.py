"""One record per photo of a job, gathered from the store and the mask PNGs the job wrote."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from gloper_jobs.data.outputs import candidate_mask
from gloper_jobs.data.rle import Rle, encode
from gloper_jobs.exceptions import GloperError
from gloper_jobs.store.models import Candidate, Item, Job


@dataclass
class CandidateOut:
    """One candidate mask of a photo, encoded at the photo's size (``rle`` None when its mask
    could not be read)."""

    name: str
    mask_path: str
    is_choice: bool
    derived: bool
    pattern_fraction: float
    dice: float | None
    iou: float | None
    rle: Rle | None = None
    #: the store's RLE at the method's working size (the mask when ``mask_path`` is empty)
    stored_rle: dict[str, Any] | None = None

    def mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``HxW bool``: the PNG, else the stored RLE resized to ``size=(height, width)``."""
        return candidate_mask(self.mask_path, self.stored_rle, size)


@dataclass
class PhotoRecord:
    """Everything an export says about one photo of one job."""

    job: Job
    item: Item
    candidates: list[CandidateOut] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # masks listed in the store but unreadable

    @property
    def chosen(self) -> CandidateOut | None:
        return next((c for c in self.candidates if c.name == self.item.choice), None)

    @property
    def oracle(self) -> CandidateOut | None:
        """The best-scoring raw candidate (the paper's figure), when labelled."""
        scored = [c for c in self.candidates if c.dice is not None]
        raw = [c for c in scored if not c.derived] or scored
        return max(raw, key=lambda c: c.dice or 0.0) if raw else None

    def settings_json(self) -> str:
        return json.dumps(self.job.params, sort_keys=True, default=str)


def photo_records(session: Session, job: Job, with_masks: bool = True) -> Iterator[PhotoRecord]:
    """Every item of ``job`` (all statuses), in path order, with its candidates.

    ``with_masks`` reads each candidate's PNG and encodes it (COCO RLE); without it
    only the stored scores are gathered (the CSV).
    """
    if job.id is None:
        raise ValueError("job has no id")
    items = session.exec(select(Item).where(Item.job_id == job.id).order_by(col(Item.rel_path))).all()
    by_item: dict[int, list[Candidate]] = defaultdict(list)
    rows = session.exec(
        select(Candidate).join(Item, col(Candidate.item_id) == col(Item.id))
        .where(Item.job_id == job.id).order_by(col(Candidate.name))
    ).all()
    for cand in rows:
        by_item[cand.item_id].append(cand)
    for item in items:
        rec = PhotoRecord(job, item)
        for c in by_item.get(item.id or -1, []):
            out = CandidateOut(c.name, c.mask_path, c.name == item.choice, c.derived, c.pattern_fraction,
                               c.dice, c.iou, stored_rle=c.rle)
            if with_masks:
                size = (item.height, item.width) if item.height and item.width else None
                try:
                    out.rle = encode(out.mask(size))
                except (OSError, GloperError) as exc:  # a missing file or object
                    rec.problems.append(f"{c.name}: mask {c.mask_path or '(RLE)'} unreadable ({exc})")
            rec.candidates.append(out)
        yield rec


def load_jobs(session: Session, job_ids: list[int]) -> list[Job]:
    """The jobs to export, in the order given; :class:`JobNotFoundError` for an unknown id."""
    from gloper_jobs.store.repository import get_job

    return [get_job(session, j) for j in job_ids]


def base_row(rec: PhotoRecord) -> dict[str, Any]:
    """The per-photo fields every format shares (no masks)."""
    item, job = rec.item, rec.job
    chosen, oracle = rec.chosen, rec.oracle
    return {
        "job_id": job.id, "method": job.method, "profile": job.profile, "settings": rec.settings_json(),
        "item_id": item.id, "path": item.rel_path, "file_name": Path(item.rel_path).name,
        "image_id": item.image_id, "species": item.species, "identity": item.identity,
        "status": item.status, "error": item.error or ("; ".join(rec.problems) or None), "note": item.note,
        "width": item.width, "height": item.height, "choice": item.choice,
        "choice_pattern_fraction": chosen.pattern_fraction if chosen else None,
        "dice": chosen.dice if chosen else None, "iou": chosen.iou if chosen else None,
        "oracle": oracle.name if oracle else None, "oracle_dice": oracle.dice if oracle else None,
        "foreground_fraction": item.foreground_fraction, "foreground_fallback": item.foreground_fallback,
        "seconds": item.seconds, "host": item.host, "device": item.device,
        **polarity_columns(job, item.species),
    }


def polarity_columns(job: Job, species: str) -> dict[str, Any]:
    """How the photo's species reading was settled (:mod:`gloper_jobs.jobs.polarity`):
    ``polarity`` (darker/lighter), ``polarity_how`` (person, calibration, fixed, default),
    ``polarity_by`` / ``polarity_at`` (who and when, for a person), ``polarity_suggestion``
    (the reading the photos' vote suggests when it differs); None for methods with one reading."""
    call = (job.species_polarity or {}).get("calls", {}).get(species)
    if not call:
        return dict.fromkeys(("polarity", "polarity_how", "polarity_by", "polarity_at", "polarity_suggestion"))
    return {"polarity": call.get("polarity"), "polarity_how": call.get("how"), "polarity_by": call.get("by"),
            "polarity_at": call.get("at"),
            "polarity_suggestion": (call.get("suggestion") or {}).get("polarity")}
