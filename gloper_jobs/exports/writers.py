"""The three export formats, each rendered to bytes (written locally or to ``s3://`` by the caller).

- **Parquet** (:func:`to_parquet`): one row per photo; the chosen mask as COCO RLE
  columns ``mask_rle_counts``, ``mask_height``, ``mask_width`` (plus ``mask_area``,
  ``mask_bbox``), every other candidate in ``other_candidates`` (a list of structs with
  the same RLE fields); read it with ``pandas.read_parquet``.
- **COCO** (:func:`to_coco`): ``images``, one ``annotations`` entry per finished photo
  (RLE ``segmentation``, ``area``, ``bbox``) and the one category ``pattern``.
- **CSV** (:func:`to_csv`): the per-photo scores, no masks.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gloper_jobs.exports.records import PhotoRecord, base_row, polarity_columns

PATTERN_CATEGORY = {"id": 1, "name": "pattern", "supercategory": "coat"}

_RLE_FIELDS = [
    pa.field("mask_rle_counts", pa.string()), pa.field("mask_height", pa.int32()),
    pa.field("mask_width", pa.int32()), pa.field("mask_area", pa.int64()),
    pa.field("mask_bbox", pa.list_(pa.float32(), 4)),
]
_CANDIDATE = pa.struct([
    pa.field("name", pa.string()), pa.field("derived", pa.bool_()), pa.field("pattern_fraction", pa.float32()),
    pa.field("dice", pa.float32()), pa.field("iou", pa.float32()), *_RLE_FIELDS,
])
PARQUET_SCHEMA = pa.schema([
    pa.field("job_id", pa.int64()), pa.field("method", pa.string()), pa.field("profile", pa.string()),
    pa.field("settings", pa.string()), pa.field("item_id", pa.int64()), pa.field("path", pa.string()),
    pa.field("file_name", pa.string()), pa.field("image_id", pa.string()), pa.field("species", pa.string()),
    pa.field("identity", pa.string()), pa.field("status", pa.string()), pa.field("error", pa.string()),
    pa.field("note", pa.string()), pa.field("width", pa.int32()), pa.field("height", pa.int32()),
    pa.field("choice", pa.string()), pa.field("choice_pattern_fraction", pa.float32()),
    pa.field("dice", pa.float32()), pa.field("iou", pa.float32()), pa.field("oracle", pa.string()),
    pa.field("oracle_dice", pa.float32()), pa.field("foreground_fraction", pa.float32()),
    pa.field("foreground_fallback", pa.bool_()), pa.field("seconds", pa.float32()),
    pa.field("host", pa.string()), pa.field("device", pa.string()),
    pa.field("polarity", pa.string()), pa.field("polarity_how", pa.string()), pa.field("polarity_by", pa.string()),
    pa.field("polarity_at", pa.string()), pa.field("polarity_suggestion", pa.string()), *_RLE_FIELDS,
    pa.field("other_candidates", pa.list_(_CANDIDATE)),
])


def _rle_cols(rle: Any) -> dict[str, Any]:
    if rle is None:
        return {"mask_rle_counts": None, "mask_height": None, "mask_width": None, "mask_area": None,
                "mask_bbox": None}
    return {"mask_rle_counts": rle.counts, "mask_height": rle.height, "mask_width": rle.width,
            "mask_area": rle.area, "mask_bbox": rle.bbox}


def parquet_row(rec: PhotoRecord) -> dict[str, Any]:
    chosen = rec.chosen
    return {
        **base_row(rec), **_rle_cols(chosen.rle if chosen else None),
        "other_candidates": [
            {"name": c.name, "derived": c.derived, "pattern_fraction": c.pattern_fraction, "dice": c.dice,
             "iou": c.iou, **_rle_cols(c.rle)}
            for c in rec.candidates if not c.is_choice
        ],
    }


def to_parquet(records: Iterable[PhotoRecord], batch: int = 1000) -> tuple[bytes, int]:
    """Parquet bytes (zstd) and the number of rows; one row group per ``batch`` photos, so
    only the compressed file and one batch of decoded rows are held in memory."""
    buf = io.BytesIO()
    rows: list[dict[str, Any]] = []
    total = 0
    with pq.ParquetWriter(buf, PARQUET_SCHEMA, compression="zstd") as writer:
        for rec in records:
            rows.append(parquet_row(rec))
            if len(rows) >= batch:
                writer.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA))
                total += len(rows)
                rows.clear()
        if rows or total == 0:
            writer.write_table(pa.Table.from_pylist(rows, schema=PARQUET_SCHEMA))
            total += len(rows)
    return buf.getvalue(), total


def to_coco(records: Iterable[PhotoRecord]) -> tuple[bytes, int]:
    """COCO JSON bytes and the number of annotations (finished photos with a readable chosen mask)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    jobs: dict[int, dict[str, Any]] = {}
    for rec in records:
        chosen = rec.chosen
        if chosen is None or chosen.rle is None:
            continue
        item, rle = rec.item, chosen.rle
        jobs.setdefault(rec.job.id or 0, {"id": rec.job.id, "method": rec.job.method,
                                          "settings": rec.job.params, "dataset": rec.job.dataset})
        images.append({
            "id": item.id, "file_name": item.rel_path, "width": rle.width, "height": rle.height,
            "species": item.species, "identity": item.identity, "source_image_id": item.image_id,
            "job_id": rec.job.id,
        })
        annotations.append({
            "id": item.id, "image_id": item.id, "category_id": PATTERN_CATEGORY["id"],
            "segmentation": rle.as_coco(), "area": rle.area, "bbox": rle.bbox, "iscrowd": 0,
            "candidate": chosen.name, "dice": chosen.dice, **polarity_columns(rec.job, item.species),
        })
    doc = {
        "info": {"description": "gloper-jobs pattern masks (the label-free choice per photo)",
                 "date_created": datetime.now(UTC).isoformat(timespec="seconds"), "jobs": list(jobs.values())},
        "images": images, "annotations": annotations, "categories": [PATTERN_CATEGORY],
    }
    return json.dumps(doc, default=str).encode(), len(annotations)


def to_csv(records: Iterable[PhotoRecord]) -> tuple[bytes, int]:
    """CSV bytes of the per-photo scores and the number of rows."""
    import pandas as pd

    rows = [base_row(r) for r in records]
    frame = pd.DataFrame(rows)
    return frame.to_csv(index=False).encode(), len(rows)
