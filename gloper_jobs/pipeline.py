"""Processing one photo end to end: load, foreground, segment, write, score.

:func:`process_photo` is the single function both the embedded run and the
Celery task call. It touches no database: it returns an :class:`ItemOutcome`
that the caller records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gloper_jobs.exceptions import LabelError
from gloper_jobs.foreground import Foreground, whole_frame
from gloper_jobs.images import load_image, resize_mask
from gloper_jobs.labels import load_label
from gloper_jobs.methods.base import SegmentContext, Segmenter
from gloper_jobs.metrics import scores_at
from gloper_jobs.outputs import clean_partial, write_choice, write_mask
from gloper_jobs.store.repository import CandidateRecord

ForegroundFn = Callable[[np.ndarray], Foreground]


@dataclass
class ItemOutcome:
    """What processing one photo produced (masks already on disk)."""

    candidates: list[CandidateRecord]
    choice: str
    seconds: float
    width: int
    height: int
    foreground: Foreground
    device: str | None
    note: str | None = None
    info: dict[str, object] = field(default_factory=dict)

    def best(self) -> CandidateRecord | None:
        """The oracle: the scored, non-derived candidate with the highest Dice."""
        scored = [c for c in self.candidates if c.scores and not c.derived]
        return max(scored, key=lambda c: c.scores["dice"]) if scored else None  # type: ignore[index]


def item_output_dir(results_dir: Path, rel_path: str) -> Path:
    """Folder of one photo's masks: ``<results_dir>/<rel_path>/`` (file name kept whole)."""
    return Path(results_dir) / rel_path


def process_photo(
    path: Path,
    segmenter: Segmenter,
    out_dir: Path,
    foreground_fn: ForegroundFn | None,
    label_path: Path | None = None,
    species: str | None = None,
    eval_size: int = 256,
    max_pixels: int | None = None,
) -> ItemOutcome:
    """Segment one photo and write ``<out_dir>/<candidate>.png`` at the photo's size, and
    ``<out_dir>/choice.json`` naming the chosen candidate.

    Raises the library's errors (:class:`ImageLoadError` for a bad photo) for
    the caller to record; an unreadable label only adds a note.
    """
    t0 = time.perf_counter()
    image = load_image(path, max_pixels) if max_pixels else load_image(path)
    h, w = image.shape[:2]
    fg = foreground_fn(image) if foreground_fn is not None else whole_frame(image)
    seg = segmenter.segment(image, fg.mask, SegmentContext(species=species, name=Path(path).name))
    label = None
    note = None
    if label_path is not None:
        try:
            label = load_label(Path(label_path))
        except LabelError as exc:
            note = str(exc)
    if fg.fallback:
        note = "; ".join(filter(None, [note, f"foreground degenerate ({fg.fraction:.3f} of frame): whole frame used"]))
    clean_partial(out_dir)
    records: list[CandidateRecord] = []
    for name, mask in seg.candidates.items():
        mask_path = out_dir / f"{name}.png"
        write_mask(mask_path, resize_mask(mask, (h, w)))
        sc = scores_at(mask, label, eval_size).as_dict() if label is not None else None
        records.append(CandidateRecord(
            name=name, mask_path=str(mask_path), is_choice=(name == seg.choice),
            derived=name in seg.derived, pattern_fraction=float(mask.mean()), scores=sc,
        ))
    write_choice(out_dir, seg.choice, records)
    return ItemOutcome(
        candidates=records, choice=seg.choice, seconds=time.perf_counter() - t0, width=w, height=h,
        foreground=fg, device=str(seg.info.get("device", "cpu")), note=note, info=seg.info,
    )
