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
from gloper_jobs.exceptions import GloperError
from gloper_jobs.exports.records import PhotoRecord
from gloper_jobs.jobs.item_files import photo_location
from gloper_jobs.reporting.data import ReportData, as_row, gallery, gather
from gloper_jobs.reporting.figures import distribution_plot, mask_thumbnail, overlay_thumbnail
from gloper_jobs.storage import write_bytes
from gloper_jobs.store.models import Job

__all__ = ["render_html", "write_html_report"]

MAX_ROWS = 2000  # photos listed in the page's table; the CSV export has them all


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


def _polarity(data: ReportData) -> list[dict[str, Any]]:
    """Per species: the stored call (reading, how, score, disagreeing photos) and one photo's
    mask in each reading, so a wrong call is seen (and corrected with `gloper polarity`)."""
    calls = (data.job.species_polarity or {}).get("calls", {})
    rows: list[dict[str, Any]] = []
    for species, call in calls.items():
        row: dict[str, Any] = {"species": species, **call, "readings": []}
        rec = next((r for r in data.done if r.item.species == species), None)
        options = ((rec.item.info or {}).get("polarity") or {}).get("candidates", {}) if rec else {}
        by_name = {c.name: c for c in rec.candidates} if rec else {}
        for reading in ("darker", "lighter"):
            cand = by_name.get(options.get(reading, ""))
            if rec is None or cand is None:
                continue
            try:
                thumb: str | None = overlay_thumbnail(Path(rec.item.path), Path(cand.mask_path))
            except Exception:  # noqa: BLE001 - a moved photo must not stop the report
                thumb = None
            row["readings"].append({"reading": reading, "name": cand.name, "thumb": thumb, "dice": cand.dice,
                                    "path": rec.item.rel_path, "chosen": reading == call["polarity"]})
        rows.append(row)
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
        failed=data.failed, fmt=_fmt, polarity=_polarity(data),
    )


def write_html_report(session: Session, job: Job, out: str | Path) -> str:
    """Render the report of ``job`` and write it to ``out`` (a path or ``s3://`` URL)."""
    return write_bytes(out, render_html(session, job).encode("utf-8"))
