"""What the review page shows, gathered from the store: the species queue, one species' photos.

The decisions themselves (the queue's order, the candidates of each reading, settling
a species, the calibration) are :mod:`gloper_jobs.jobs.polarity`'s; this module only
arranges them for the templates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlmodel import col, select

from gloper_jobs.review.sampling import page_count, page_of
from gloper_jobs.store.models import Item, ItemStatus, Job

if TYPE_CHECKING:
    from sqlmodel import Session

READINGS = ("darker", "lighter")


class UnknownSpeciesError(LookupError):
    """The job has no call for that species (a stale link, a typo): the page answers 404."""


def mask_key(base: str) -> tuple[int, int, str]:
    """The order masks are shown in: consensus, fused, each local size ascending, the rest by name."""
    if base == "consensus":
        return (0, 0, base)
    if base == "fused":
        return (1, 0, base)
    m = re.fullmatch(r"local_(\d+)", base)
    return (2, int(m.group(1)), base) if m else (3, 0, base)


def mask_label(base: str) -> str:
    """How a mask base is titled on the page (k-means' reading of its clusters is ``polarity``)."""
    return {"polarity": "clusters"}.get(base, base)


@dataclass
class QueueRow:
    """One species on the index: its call and why it sits where it does."""

    species: str
    photos: int
    doubt: float
    weight: float
    call: dict[str, Any]


def queue(session: Session, job_id: int) -> list[QueueRow]:
    """The job's species, the ones a decision matters most for first (photos x doubt)."""
    from gloper_jobs.jobs.polarity import review_queue

    return [QueueRow(r.species, r.photos, float(r.doubt), float(r.weight), dict(r.call))
            for r in review_queue(session, job_id)]


def next_species(session: Session, job_id: int, after: str) -> str | None:
    """The species to look at after ``after``: the first in the queue's order (the one a
    decision matters most for) that no person has settled, None when every species is."""
    return next((r.species for r in queue(session, job_id)
                 if r.species != after and r.call.get("how") != "person"), None)


@dataclass
class PhotoRow:
    """One photo of a species page: its candidates per (mask, reading) and the current choice."""

    item: Item
    readings: dict[tuple[str, str], str]
    disagrees: bool


@dataclass
class SpeciesPage:
    """One page of a species: its call, the masks (columns) and the photos (rows) shown."""

    species: str
    call: dict[str, Any]
    photos: int
    page: int
    pages: int
    masks: list[str] = field(default_factory=list)
    rows: list[PhotoRow] = field(default_factory=list)

    @property
    def current(self) -> tuple[str | None, str]:
        """The call's (mask, reading); the mask None when the call keeps the method's own."""
        return self.call.get("mask"), str(self.call.get("polarity", "darker"))


def species_calls(job: Job) -> dict[str, dict[str, Any]]:
    """The job's stored call per species (``{}`` before it drains)."""
    return dict((job.species_polarity or {}).get("calls") or {})


def species_page(session: Session, job: Job, species: str, page: int, per_page: int) -> SpeciesPage:
    """Page ``page`` (1-based) of ``species``: ``per_page`` of its finished photos spread over
    all of them (:mod:`~gloper_jobs.review.sampling`), each with every candidate of each
    (mask, reading). Raises :class:`UnknownSpeciesError` for a species without a call."""
    from gloper_jobs.jobs.readings import reading_candidates

    calls = species_calls(job)
    if species not in calls:
        raise UnknownSpeciesError(species)
    ids = list(session.exec(select(Item.id).where(
        Item.job_id == job.id, Item.species == species, Item.status == ItemStatus.done.value,
    ).order_by(col(Item.id))).all())
    pages = max(1, page_count(len(ids), per_page))
    page = min(max(1, page), pages)
    shown = page_of(ids, per_page, page)
    items = {i.id: i for i in session.exec(select(Item).where(col(Item.id).in_(shown))).all()} if shown else {}
    call = calls[species]
    disagree = set(call.get("disagree") or ())
    out = SpeciesPage(species, call, len(ids), page, pages)
    masks: set[str] = set()
    for item_id in shown:
        item = items[item_id]
        readings = {(base, pol): name for (base, pol), name in
                    reading_candidates(session, int(job.id or 0), int(item_id or 0)).items() if pol in READINGS}
        masks.update(base for base, _ in readings)
        out.rows.append(PhotoRow(item, readings, item.rel_path in disagree))
    out.masks = sorted(masks, key=mask_key)
    return out
