"""Re-pointing: every photo's chosen mask follows its species' call, as a resumable step.

A species' call (:mod:`gloper_jobs.jobs.polarity`) names a reading and a mask; each done
item whose ``choice`` is another candidate is *re-pointed*: the new choice's
full-resolution PNG is written from its stored RLE when it had none (locally or in S3),
its ``choice.json`` rewritten, ``candidate.is_choice`` and ``item.choice`` updated.
Nothing runs again. Items go in pages of ``batch`` (id order), each page committed on its
own, outside the transaction that drained the job: a kill loses at most the page in
flight, whose files are rewritten (the same bytes) when it is started again, and an
interrupted re-point finishes when :func:`repoint` runs again (``gloper polarity JOB``,
``gloper run`` of the same job, the review page, a worker's reconciler).

The calls are read again at every page, so a decision taken while a re-point runs is
followed from the next page on, and the step ends ``done`` only when no newer decision
came in (``version``), else it goes round once more.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gloper_jobs import defaults

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.store import Store
    from gloper_jobs.store.models import Candidate, Item, Job


@dataclass
class RepointSummary:
    """What a re-point did: items looked at and re-pointed (per species), PNGs written,
    seconds, rounds (a decision taken meanwhile adds one), and whether it finished."""

    items: int = 0
    repointed: int = 0
    written: int = 0
    seconds: float = 0.0
    rounds: int = 0
    finished: bool = False
    per_species: dict[str, int] = field(default_factory=dict)


def pending(job: Job) -> bool:
    """Whether ``job`` has calls its photos do not all follow yet."""
    return (job.species_polarity or {}).get("repoint", {}).get("state") == "pending"


def _files(old: Candidate, new: Candidate, item: Item, target: str) -> str | None:
    """Write the new choice's files (its PNG from the stored RLE when it had none, and
    ``choice.json``) in the item's folder (or ``s3://`` prefix); returns the PNG's location."""
    from gloper_jobs.data.outputs import candidate_mask, repoint_choice

    folder = old.mask_path.rsplit("/", 1)[0]
    size = (item.height, item.width) if item.height and item.width else None
    mask = None if new.mask_path else candidate_mask("", new.rle, size)
    return repoint_choice(folder, target, mask)


def _repoint_page(session: Session, job: Job, calls: dict[str, Any], after: int, batch: int,
                  summary: RepointSummary) -> int | None:
    """Re-point one page of done items after id ``after``; returns the last id (None: no more).

    The files of the page's items are written on ``defaults.REPOINT_THREADS`` threads (PNG
    encoding and the writes release the GIL), then the rows are updated in the caller's
    transaction."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlmodel import col, select

    from gloper_jobs.jobs.readings import readings_of, target_of
    from gloper_jobs.store.models import Candidate, Item, ItemStatus

    items = session.exec(select(Item).where(Item.job_id == job.id, Item.status == ItemStatus.done.value,
                                            col(Item.id) > after).order_by(col(Item.id)).limit(batch)).all()
    if not items:
        return None
    wanted = {int(item.id or 0): item for item in items
              if isinstance((item.info or {}).get("polarity"), dict) and item.species in calls
              and calls[item.species].get("how") != "fixed" and (item.info or {})["polarity"].get("rule") != "fixed"}
    summary.items += len(wanted)
    by_item: dict[int, list[Candidate]] = {}
    if wanted:
        for c in session.exec(select(Candidate).where(col(Candidate.item_id).in_(list(wanted)))).all():
            by_item.setdefault(c.item_id, []).append(c)
    moves: list[tuple[Item, Candidate, Candidate, str]] = []
    for item_id, item in wanted.items():
        own = by_item.get(item_id, [])
        call = calls[item.species]
        readings = readings_of(job, [c.name for c in own]) if call.get("mask") else {}
        target = target_of(call, (item.info or {})["polarity"], readings)
        if target is None or target == item.choice:
            continue
        new = next((c for c in own if c.name == target), None)
        old = next((c for c in own if c.is_choice and c.mask_path), None)
        if new is not None and old is not None:
            moves.append((item, old, new, target))
    with ThreadPoolExecutor(max_workers=defaults.REPOINT_THREADS) as pool:
        written = list(pool.map(lambda m: _files(m[1], m[2], m[0], m[3]), moves))
    for (item, _old, new, target), png in zip(moves, written, strict=True):
        for c in by_item[int(item.id or 0)]:
            if c.is_choice != (c.name == target) or (c is new and png is not None):
                c.is_choice = c.name == target
                if c is new and png is not None:
                    c.mask_path = png
                session.add(c)
        item.choice = target
        session.add(item)
        summary.repointed += 1
        summary.written += int(png is not None)
        summary.per_species[item.species] = summary.per_species.get(item.species, 0) + 1
    return int(items[-1].id or 0)


def _add_counts(data: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    calls = {sp: ({**c, "repointed": int(c.get("repointed", 0)) + counts.get(sp, 0)} if sp in counts else c)
             for sp, c in data.get("calls", {}).items()}
    return {**data, "calls": calls}


def repoint(store: Store, job_id: int, batch: int | None = None,
            progress: Callable[[RepointSummary], None] | None = None) -> RepointSummary:
    """Re-point every done item of job ``job_id`` to its species' call, ``batch`` items a
    transaction (``defaults.REPOINT_BATCH``); resumable, see the module doc. ``progress``
    is called after every page. Returns what it did; ``finished`` once no newer decision
    is left to follow."""
    from gloper_jobs.store.models import Job

    batch = batch or defaults.REPOINT_BATCH
    t0 = time.perf_counter()
    summary = RepointSummary()
    while True:
        summary.rounds += 1
        with store.session() as s:
            job = s.get(Job, job_id)
            if job is None or not (job.species_polarity or {}).get("calls"):
                summary.finished = True
                break
            version = int((job.species_polarity or {}).get("version", 0))
        after: int | None = 0
        while after is not None:
            with store.session() as s:
                job = s.get(Job, job_id)
                if job is None:  # jobs are never deleted; a store swapped underneath is not ours to fix
                    return summary
                before, seen = dict(summary.per_species), summary.items
                after = _repoint_page(s, job, dict((job.species_polarity or {}).get("calls", {})), after, batch,
                                      summary)
                counts = {sp: n - before.get(sp, 0) for sp, n in summary.per_species.items() if n != before.get(sp, 0)}
                # the counts go onto the row as it is now (locked where the database can): a
                # decision taken while this page ran must not be written over
                s.refresh(job, with_for_update=True)
                data = dict(job.species_polarity or {})
                rp = dict(data.get("repoint", {}))
                rp["items"] = int(rp.get("items", 0)) + summary.items - seen
                job.species_polarity = {**_add_counts(data, counts), "repoint": {**rp, "at": _now()}}
                s.add(job)
                s.commit()
            if progress is not None:
                progress(summary)
        with store.session() as s:
            job = s.get(Job, job_id, with_for_update=True)
            data = dict((job.species_polarity if job is not None else None) or {})
            if job is not None and int(data.get("version", 0)) == version:
                data["repoint"] = {**data.get("repoint", {}), "state": "done", "version": version, "at": _now()}
                job.species_polarity = data
                s.add(job)
                s.commit()
                summary.finished = True
                break
        # a decision came in while this round ran: follow it from the start
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _now() -> str:
    from gloper_jobs.store.models import utcnow

    return utcnow().isoformat(timespec="seconds")


def save_as_calibration(session: Session, job_id: int, who: str) -> int:
    """Store the species a person or a calibration settled on extract job ``job_id`` as a
    calibration job (kind ``calibrate``, done), usable with ``--settings-from ID`` on later
    jobs of the same method: per species, the job's settings plus the parameters that make
    the method choose the decided candidate. The same decisions give the same ID. Returns it.

    Raises :class:`InvalidParameterError` when no species is settled yet.
    """
    from sqlmodel import col, select

    from gloper_jobs.exceptions import InvalidParameterError
    from gloper_jobs.jobs.calibration import KIND, PER_SPECIES, SETTINGS_FROM
    from gloper_jobs.jobs.readings import readings_of, target_of
    from gloper_jobs.methods.registry import get_segmenter_class
    from gloper_jobs.store.models import (
        Calibration,
        Candidate,
        Item,
        ItemStatus,
        Job,
        JobStatus,
        utcnow,
    )
    from gloper_jobs.store.repository import get_job, insert_statement

    job = get_job(session, job_id)
    calls = (job.species_polarity or {}).get("calls", {})
    settled = {sp: c for sp, c in calls.items() if c.get("how") in ("person", "calibration")}
    if not settled:
        raise InvalidParameterError(f"job {job_id} has no species settled by a person or a calibration yet: settle "
                                    f"them with `gloper review {job_id}` or `gloper polarity {job_id} SPECIES=...`")
    method = get_segmenter_class(job.method)
    base = {k: v for k, v in (job.params or {}).items() if k not in (PER_SPECIES, SETTINGS_FROM)}
    per_species: dict[str, dict[str, Any]] = {}
    for species, call in sorted(settled.items()):
        item = session.exec(select(Item).where(Item.job_id == job_id, Item.species == species,
                                               Item.status == ItemStatus.done.value).limit(1)).first()
        if item is None or not isinstance((item.info or {}).get("polarity"), dict):
            continue
        names = session.exec(select(Candidate.name).where(col(Candidate.item_id) == item.id)).all()
        target = target_of(call, (item.info or {})["polarity"], readings_of(job, list(names)))
        chosen = method.choice_params(target, base) if target else None
        if chosen is None:
            continue
        per_species[species] = {**base, **chosen}
    blob = json.dumps({"from_job": job.key, "species": per_species}, sort_keys=True, default=str)
    key = hashlib.sha256(f"review:{blob}".encode()).hexdigest()
    existing = session.exec(select(Job).where(Job.key == key)).first()
    if existing is not None and existing.id is not None:
        return existing.id
    cal = Job(key=key, kind=KIND, dataset=job.dataset, method=job.method, profile=job.profile,
              params={"grid": [base], "from_review": job_id, "by": who}, foreground_model=job.foreground_model,
              foreground_rim=job.foreground_rim, eval_size=job.eval_size, status=JobStatus.done.value,
              results_dir=job.results_dir, n_items=0, source=f"review of job {job_id} by {who}")
    session.add(cal)
    session.flush()
    for species, params in per_species.items():
        session.execute(insert_statement(session, Calibration).values(
            job_id=cal.id, species=species, params=params, dice=0.0,
            photos=int(settled[species].get("photos", 0)), settings_tried=1, created_at=utcnow()))
    session.flush()
    return int(cal.id or 0)
