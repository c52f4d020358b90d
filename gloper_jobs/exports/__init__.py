"""Exports of a job's results: Parquet, COCO JSON and CSV (see :mod:`.writers`)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from gloper_jobs import defaults
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.exports.records import PhotoRecord, load_jobs, photo_records
from gloper_jobs.exports.writers import to_coco, to_csv, to_parquet
from gloper_jobs.storage import write_bytes

__all__ = ["ExportResult", "export_jobs", "photo_records"]


@dataclass(frozen=True)
class ExportResult:
    """Where an export went, how many rows (annotations for COCO), bytes and seconds."""

    location: str
    rows: int
    size: int
    seconds: float
    problems: int  # masks listed in the store that could not be read


def export_jobs(session: Session, job_ids: Sequence[int], fmt: str, out: str) -> ExportResult:
    """Export jobs ``job_ids`` as ``fmt`` (parquet, coco or csv) to ``out`` (a path or ``s3://`` URL)."""
    if fmt not in defaults.EXPORT_FORMATS:
        raise InvalidParameterError(f"unknown export format {fmt!r}; use one of {', '.join(defaults.EXPORT_FORMATS)}")
    t0 = time.perf_counter()
    jobs = load_jobs(session, list(job_ids))
    problems = [0]

    def records() -> Iterator[PhotoRecord]:
        for job in jobs:
            for rec in photo_records(session, job, with_masks=fmt != "csv"):
                problems[0] += len(rec.problems)
                yield rec

    render = {"parquet": to_parquet, "coco": to_coco, "csv": to_csv}[fmt]
    data, rows = render(records())
    location = write_bytes(out, data)
    return ExportResult(location, rows, len(data), time.perf_counter() - t0, problems[0])
