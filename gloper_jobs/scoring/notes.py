"""What a run noticed: the photos its scan left out and the notes on its items, counted by kind.

A run that skips, repairs or doubts something says so in its own output and in ``gloper
report`` (both print :func:`format_notes`), with how to fix it:

- **left out by the scan**: symlinks leading out of the dataset's root (``job.scan_notes``);
- **not scored**: an unreadable label, or one whose aspect ratio is not its photo's
  (:func:`gloper_jobs.data.labels.shape_mismatch`);
- **repaired**: a degenerate foreground, replaced by the whole frame.

Items' notes begin with a kind's prefix (:mod:`gloper_jobs.defaults` ``NOTE_*``); they are
counted in the store, so a report of any size reads only the lines it prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from gloper_jobs import defaults
from gloper_jobs.store.models import Item, Job

#: (note prefix, what it means) for every kind of item note, in the order a report lists them
NOTE_KINDS: tuple[tuple[str, str], ...] = (
    (defaults.NOTE_LABEL_UNREADABLE, "labels that cannot be read (photos not scored)"),
    (defaults.NOTE_LABEL_SHAPE, "labels of another shape than their photo (photos not scored)"),
    (defaults.NOTE_FOREGROUND_FALLBACK, "no animal found by the foreground model (whole frame used)"),
)


def scan_notes(skipped: Sequence[str], total: int | None = None) -> dict[str, Any] | None:
    """``job.scan_notes`` for a scan that left out ``skipped`` (the first of ``total``), or None."""
    if not skipped:
        return None
    return {"skipped": list(skipped[:defaults.SCAN_NOTES_KEPT]), "n_skipped": total or len(skipped)}


class SkipList(list[str]):
    """The ``skipped`` list a folder scan appends to, keeping only the first
    :data:`~gloper_jobs.defaults.SCAN_NOTES_KEPT` lines and counting all (``total``)."""

    total = 0

    def append(self, line: str) -> None:
        self.total += 1
        if len(self) < defaults.SCAN_NOTES_KEPT:
            super().append(line)


def note_counts(session: Session, job_id: int) -> dict[str, int]:
    """Items of the job with a note of each kind (prefix -> count; kinds with none left out)."""
    out = {}
    for prefix, _ in NOTE_KINDS:
        n = session.exec(select(func.count()).select_from(Item).where(
            Item.job_id == job_id, col(Item.note).contains(prefix))).one()
        if n:
            out[prefix] = int(n)
    return out


def noticed(session: Session, job: Job) -> dict[str, int]:
    """How many things of each kind the job noticed: ``left out by the scan`` and each note
    kind's prefix (kinds with none left out)."""
    out = {"left out by the scan": int((job.scan_notes or {}).get("n_skipped", 0))}
    out.update(note_counts(session, int(job.id or 0)))
    return {k: v for k, v in out.items() if v}


def format_notes(session: Session, job: Job, shown: int = defaults.REPORT_NOTES_SHOWN) -> str:
    """What the job's scan left out and its items' notes, by kind, with how to fix each ('' when none)."""
    job_id = int(job.id or 0)
    lines: list[str] = []
    scan = job.scan_notes or {}
    if scan.get("n_skipped"):
        lines.append(f"left out by the scan ({scan['n_skipped']}; a symlink that leads out of the dataset's "
                     "root is not followed: copy the photo into the root, or link to a path inside it):")
        lines += [f"  {line}" for line in scan["skipped"][:shown]]
        if scan["n_skipped"] > min(shown, len(scan["skipped"])):
            lines.append(f"  ... {scan['n_skipped'] - min(shown, len(scan['skipped']))} more")
    counts = note_counts(session, job_id)
    for prefix, meaning in NOTE_KINDS:
        if prefix not in counts:
            continue
        lines.append(f"{meaning}: {counts[prefix]}")
        rows = session.exec(select(Item.rel_path, Item.note).where(
            Item.job_id == job_id, col(Item.note).contains(prefix)).order_by(col(Item.rel_path)).limit(shown)).all()
        lines += [f"  {path}: {_part(note or '', prefix)}" for path, note in rows]
        if counts[prefix] > shown:
            lines.append(f"  ... {counts[prefix] - shown} more: `gloper export {job_id} --format csv` has every "
                         "photo's note")
    return "\n".join(lines)


def _part(note: str, prefix: str) -> str:
    """The part of an item's note (notes of several kinds are joined by '; ') of kind ``prefix``."""
    start = note.find(prefix)
    following = [note.find(f"; {p}", start + 1) for p, _ in NOTE_KINDS if p != prefix]
    end = min((i for i in following if i > start), default=len(note))
    return note[start:end]
