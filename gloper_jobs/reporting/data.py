"""What the HTML report shows, gathered from the store: one :class:`ReportData` per job."""

from __future__ import annotations

import platform
import statistics
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from sqlmodel import Session

from gloper_jobs import defaults
from gloper_jobs.exports.records import PhotoRecord, photo_records
from gloper_jobs.scoring.reports import ItemScore, SpeciesRow, species_rows
from gloper_jobs.store.models import ItemStatus, Job
from gloper_jobs.store.repository import status_counts

VERSIONED = ("gloper-jobs", "torch", "numpy", "opencv-python-headless", "rembg", "onnxruntime", "pycocotools")


@dataclass
class ReportData:
    """A job, its photos (``records``, path order), scores when labelled, and run facts."""

    job: Job
    records: list[PhotoRecord]
    counts: dict[str, int]
    scores: list[ItemScore] = field(default_factory=list)
    species: list[SpeciesRow] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    hosts: list[tuple[str, str, int]] = field(default_factory=list)  # (host, device, photos)
    timings: dict[str, str] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.scores)

    @property
    def done(self) -> list[PhotoRecord]:
        return [r for r in self.records if r.item.status == ItemStatus.done.value]

    @property
    def failed(self) -> list[PhotoRecord]:
        return [r for r in self.records if r.item.status == ItemStatus.failed.value]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _scores(records: list[PhotoRecord]) -> list[ItemScore]:
    scores = []
    for rec in records:
        oracle, chosen = rec.oracle, rec.chosen
        if oracle is None or oracle.dice is None:
            continue
        choice_dice = chosen.dice if chosen is not None and chosen.dice is not None else oracle.dice
        scores.append(ItemScore(rec.item.rel_path, rec.item.species, oracle.name, float(oracle.dice),
                                rec.item.choice or oracle.name, float(choice_dice)))
    return scores


def _timings(job: Job, records: list[PhotoRecord]) -> dict[str, str]:
    secs = [r.item.seconds for r in records if r.item.seconds is not None]
    started = [r.item.started_at for r in records if r.item.started_at is not None]
    finished = [r.item.finished_at for r in records if r.item.finished_at is not None]
    out = {"job created": f"{job.created_at:%Y-%m-%d %H:%M:%S} UTC",
           "last update": f"{job.updated_at:%Y-%m-%d %H:%M:%S} UTC"}
    if secs:
        out.update({
            "photo seconds (sum)": f"{sum(secs):.1f}", "per photo (mean)": f"{statistics.fmean(secs):.2f} s",
            "per photo (median)": f"{statistics.median(secs):.2f} s", "slowest photo": f"{max(secs):.2f} s",
        })
    if started and finished:
        out["first start to last finish"] = f"{(max(finished) - min(started)).total_seconds():.1f} s"
    return out


def gather(session: Session, job: Job) -> ReportData:
    """Everything the page needs about ``job`` (masks are not read here)."""
    if job.id is None:
        raise ValueError("job has no id")
    records = list(photo_records(session, job, with_masks=False))
    scores = _scores(records)
    hosts = Counter((r.item.host or "?", r.item.device or "-") for r in records if r.item.host)
    return ReportData(
        job=job, records=records, counts=status_counts(session, job.id), scores=scores,
        species=species_rows(scores), versions=_versions(),
        hosts=[(h, d, n) for (h, d), n in sorted(hosts.items())], timings=_timings(job, records),
    )


def gallery(data: ReportData, n: int = defaults.REPORT_GALLERY) -> list[tuple[str, list[PhotoRecord]]]:
    """Gallery sections: the ``n`` best and worst photos by label-free Dice when labelled,
    else an evenly spaced sample of ``2n`` finished photos."""
    if data.labelled:
        by_dice = {s.rel_path: s.choice_dice for s in data.scores}
        ranked = sorted((r for r in data.done if r.item.rel_path in by_dice),
                        key=lambda r: (-by_dice[r.item.rel_path], r.item.rel_path))
        k = min(n, (len(ranked) + 1) // 2)  # few photos: split them, never show one twice
        best, worst = ranked[:k], ranked[k:][::-1][:n]
        return [("Best photos (label-free Dice)", best), ("Worst photos (label-free Dice)", worst)]
    done = data.done
    step = max(1, len(done) // (2 * n)) if done else 1
    return [("A sample of the photos", done[::step][: 2 * n])]


def as_row(rec: PhotoRecord) -> dict[str, Any]:
    """One line of the per-photo table."""
    chosen, oracle = rec.chosen, rec.oracle
    return {
        "path": rec.item.rel_path, "species": rec.item.species, "identity": rec.item.identity or "",
        "status": rec.item.status, "choice": rec.item.choice or "",
        "choice_dice": chosen.dice if chosen else None, "oracle": oracle.name if oracle else "",
        "oracle_dice": oracle.dice if oracle else None,
        "pattern": chosen.pattern_fraction if chosen else None,
        "foreground": rec.item.foreground_fraction, "fallback": bool(rec.item.foreground_fallback),
        "seconds": rec.item.seconds,
    }
