"""The text report of a job (``gloper report JOB``, the end of ``gloper run``): the Dice
table, status counts, failed photos, what the run noticed and each species' reading."""

from __future__ import annotations

from sqlmodel import Session

from gloper_jobs import defaults
from gloper_jobs.scoring.reports import (
    format_photo_list,
    format_species_table,
    streamed_species_rows,
)
from gloper_jobs.store.models import ItemStatus, Job
from gloper_jobs.store.repository import latest_errors, require_id, status_counts


def job_report(session: Session, job: Job) -> str:
    """The Dice table, status counts and failed photos of ``job`` as text."""
    job_id = require_id(job)
    table = streamed_species_rows(session, job_id)
    params = ", ".join(f"{k}={v}" for k, v in job.params.items() if k != "per_species")
    if job.params.get("per_species"):  # the calibration's settings: `gloper calibration JOB` prints them
        params += f", calibrated species: {len(job.params['per_species'])}"
    rim = f" less a {job.foreground_rim:.2%} rim" if job.foreground_rim else ""
    title = (f"Job {job.id} · {job.method} ({params}) · foreground {job.foreground_model}{rim} · "
             f"Dice at {job.eval_size}x{job.eval_size}")
    parts = [format_species_table(table, title)]
    if not table:
        parts.append(format_photo_list(session, job_id))
    counts = status_counts(session, job_id)
    parts.append("items: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    n_failed = counts.get(ItemStatus.failed.value, 0)
    if n_failed:
        parts.append(f"failed photos ({n_failed}):")
        parts.extend(f"  {it.rel_path}: {it.error}"
                     for it in latest_errors(session, job_id, defaults.REPORT_FAILURES_SHOWN))
        if n_failed > defaults.REPORT_FAILURES_SHOWN:
            parts.append(f"  ... {n_failed - defaults.REPORT_FAILURES_SHOWN} more: "
                         f"`gloper export {job_id} --format csv` lists every photo with its status and error")
    from gloper_jobs.scoring.notes import format_notes

    noticed = format_notes(session, job)
    if noticed:
        parts.append(noticed)
    from gloper_jobs.jobs.polarity import format_species_polarity

    polarity = format_species_polarity(job)
    if polarity:
        parts.append(polarity)
    parts.append(f"masks: {job.results_dir}")
    return "\n".join(parts)
