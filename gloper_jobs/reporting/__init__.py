"""The HTML report of a job: one self-contained page (every image a ``data:`` URI).

``gloper report JOB --html PATH`` writes it; :func:`render_html` builds it from
the store and the job's mask files.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlmodel import Session

from gloper_jobs import defaults
from gloper_jobs.data.outputs import candidate_mask
from gloper_jobs.exceptions import GloperError
from gloper_jobs.exports.records import PhotoRecord
from gloper_jobs.jobs.item_files import photo_location
from gloper_jobs.reporting.data import ReportData, as_row, gallery, gather
from gloper_jobs.reporting.figures import (
    data_uri,
    distribution_plot,
    jpeg_bytes,
    mask_thumbnail,
    overlay_thumbnail,
    photo_thumbnail,
    reading_picture,
)
from gloper_jobs.storage import write_bytes
from gloper_jobs.store.models import Job

__all__ = ["render_html", "write_html_report"]

MAX_ROWS = 2000  # photos listed in the page's table; the CSV export has them all


def when(at: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM UTC`` ('' for none; the text itself if it is no ISO time)."""
    from datetime import datetime

    if not at:
        return ""
    try:
        return f"{datetime.fromisoformat(at):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return at


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _card(rec: PhotoRecord) -> dict[str, Any]:
    chosen = rec.chosen
    card: dict[str, Any] = {
        "path": rec.item.rel_path, "species": rec.item.species, "identity": rec.item.identity,
        "choice": rec.item.choice, "dice": chosen.dice if chosen else None, "overlay": None, "problem": None,
        "candidates": [],
    }
    try:
        if chosen is None:
            raise OSError(f"the chosen candidate {rec.item.choice!r} has no mask in the store")
        card["overlay"] = overlay_thumbnail(photo_location(rec.job, rec.item),
                                            chosen.mask_path or chosen.mask())
    except Exception as exc:  # noqa: BLE001 - a moved photo must not stop the report
        card["problem"] = f"cannot show this photo: {exc}"
    for c in rec.candidates:
        try:
            thumb: str | None = mask_thumbnail(c.mask_path or c.mask())
        except (OSError, GloperError):  # a missing file or object
            thumb = None
        card["candidates"].append({"name": c.name, "chosen": c.is_choice, "dice": c.dice, "thumb": thumb})
    return card


def _reading_pictures(session: Session, rec: PhotoRecord, call: dict[str, Any], side: int) -> list[dict[str, Any]]:
    """One photo of a species in both readings of its call's mask (the method's own when the
    call names none), each drawn from the candidate's RLE in the store over the photo read
    once at ``side`` px; the call's reading marked ``chosen``."""
    from gloper_jobs.jobs.readings import reading_candidates, target_of

    info = (rec.item.info or {}).get("polarity") or {}
    by_name = {c.name: c for c in rec.candidates}
    readings = reading_candidates(session, int(rec.job.id or 0), int(rec.item.id or 0))
    shown = []
    for reading in ("darker", "lighter"):
        name = target_of({**call, "polarity": reading}, info, readings)
        if name in by_name:
            shown.append((reading, by_name[str(name)]))
    if not shown:
        return []
    try:
        thumb: Any = photo_thumbnail(photo_location(rec.job, rec.item), side)
    except Exception:  # noqa: BLE001 - a moved photo must not stop the report
        thumb = None
    out = []
    for reading, cand in shown:
        picture = None
        if thumb is not None:
            try:  # the store's RLE (every candidate has one); the PNG only for rows from before RLEs
                mask = candidate_mask("" if cand.stored_rle else cand.mask_path, cand.stored_rle)
                picture = data_uri(jpeg_bytes(reading_picture(thumb, mask)), "image/jpeg")
            except (OSError, GloperError):
                picture = None
        out.append({"reading": reading, "name": cand.name, "thumb": picture, "dice": cand.dice,
                    "path": rec.item.rel_path, "chosen": reading == call.get("polarity")})
    return out


def _polarity(session: Session, data: ReportData, side: int = defaults.REPORT_READING_SIDE) -> list[dict[str, Any]]:
    """Per species: the stored call (reading, mask, how it was settled, by whom and when, the
    photos' suggestion) and one photo in both readings, large enough to judge the coat, so a
    wrong call is seen (and settled with `gloper review`)."""
    calls = (data.job.species_polarity or {}).get("calls", {})
    first: dict[str, PhotoRecord] = {}
    for r in data.done:
        first.setdefault(r.item.species, r)
    rows: list[dict[str, Any]] = []
    for species, call in calls.items():
        rec = first.get(species)
        rows.append({"species": species, **call,
                     "readings": _reading_pictures(session, rec, call, side) if rec else []})
    return rows


def _plot(data: ReportData) -> tuple[str, str | None]:
    if data.labelled:
        series = {"label-free": [s.choice_dice for s in data.scores], "oracle": [s.oracle_dice for s in data.scores]}
        return "Dice distribution", distribution_plot(series, f"Dice at {data.job.eval_size} x {data.job.eval_size}")
    fractions = [c.pattern_fraction for r in data.done if (c := r.chosen) is not None]
    if not fractions:
        return "Pattern fraction distribution", None
    return ("Pattern fraction distribution (no labels: share of the working image the chosen mask covers)",
            distribution_plot({"chosen mask": fractions}, "pattern fraction"))


def render_html(session: Session, job: Job, gallery_size: int = defaults.REPORT_GALLERY) -> str:
    """The report page of ``job`` as one HTML string."""
    data = gather(session, job)
    env = Environment(loader=PackageLoader("gloper_jobs.reporting", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    species_counts = Counter(r.item.species for r in data.records)
    done_counts = Counter(r.item.species for r in data.done)
    plot_title, plot = _plot(data)
    return env.get_template("report.html.j2").render(
        job=job, versions=data.versions, hosts=data.hosts, timings=data.timings, counts=data.counts,
        labelled=data.labelled, species=data.species,
        species_counts=[(sp, n, done_counts[sp]) for sp, n in sorted(species_counts.items())],
        plot=plot, plot_title=plot_title,
        gallery=[(title, [_card(r) for r in recs]) for title, recs in gallery(data, gallery_size)],
        rows=[as_row(r) for r in data.records[:MAX_ROWS]], n_records=len(data.records),
        failed=data.failed, fmt=_fmt, polarity=_polarity(session, data), when=when,
    )


def write_html_report(session: Session, job: Job, out: str | Path) -> str:
    """Render the report of ``job`` and write it to ``out`` (a path or ``s3://`` URL)."""
    return write_bytes(out, render_html(session, job).encode("utf-8"))
