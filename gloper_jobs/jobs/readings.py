"""Readings: which of an item's candidates is which mask in which colour.

A species' call names a *reading* (``darker`` / ``lighter``) and a *mask base* (GloPER:
``consensus``, ``fused``, ``local_<l>``; k-means: ``polarity``); these functions turn it
into one item's candidate name through the method's own
:meth:`~gloper_jobs.methods.base.Segmenter.choice_params`, so any method that can be told
which candidate to choose has readings (:mod:`gloper_jobs.jobs.polarity`,
:mod:`gloper_jobs.jobs.repointing` and the review page use them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.store.models import Job


def target_of(call: dict[str, Any], info: dict[str, Any], readings: dict[tuple[str, str], str]) -> str | None:
    """The candidate one item should choose under its species' ``call``: the call's mask
    in its reading, else the method's own choice in that reading (``info["candidates"]``,
    the item's stored polarity evidence)."""
    polarity = call.get("polarity")
    if call.get("mask"):
        return readings.get((str(call["mask"]), str(polarity)))
    return info.get("candidates", {}).get(polarity)


def reading_candidates(session: Session, job_id: int, item_id: int) -> dict[tuple[str, str], str]:
    """``(mask base, polarity) -> candidate name`` of one item of job ``job_id``:
    ``("consensus", "lighter") -> "consensus_lighter"``, ``("local_16", "darker") ->
    "local_16"``; k-means: ``("polarity", "darker") -> "cluster_0"``. Built from the method's
    :meth:`~gloper_jobs.methods.base.Segmenter.choice_params`, so every method that can be
    told to choose a candidate has its readings here."""
    from sqlmodel import select

    from gloper_jobs.store.models import Candidate
    from gloper_jobs.store.repository import get_job

    job = get_job(session, job_id)
    names = session.exec(select(Candidate.name).where(Candidate.item_id == item_id)).all()
    return readings_of(job, list(names))


def readings_of(job: Job, names: Sequence[str]) -> dict[tuple[str, str], str]:
    """:func:`reading_candidates` of an item whose candidates are ``names``."""
    from gloper_jobs.jobs.calibration import PER_SPECIES, SETTINGS_FROM
    from gloper_jobs.methods.registry import get_segmenter_class

    method = get_segmenter_class(job.method)
    params = {k: v for k, v in (job.params or {}).items() if k not in (PER_SPECIES, SETTINGS_FROM)}
    out: dict[tuple[str, str], str] = {}
    for name in names:
        cp = method.choice_params(name, params)
        if cp and cp.get("polarity") in ("darker", "lighter"):
            out.setdefault((str(cp.get("choice", "own")), cp["polarity"]), name)
    return out


def mask_bases(session: Session, job: Job, species: str) -> list[str]:
    """The mask bases (``consensus``, ``fused``, ``local_16``, ...) one done item of
    ``species`` has in both readings."""
    from sqlmodel import select

    from gloper_jobs.store.models import Candidate, Item, ItemStatus

    item_id = session.exec(select(Item.id).where(Item.job_id == job.id, Item.species == species,
                                                 Item.status == ItemStatus.done.value).limit(1)).first()
    if item_id is None:
        return []
    names = session.exec(select(Candidate.name).where(Candidate.item_id == item_id)).all()
    readings = readings_of(job, list(names))
    return sorted({b for b, p in readings if (b, "darker") in readings and (b, "lighter") in readings})
