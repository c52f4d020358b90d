"""One candidate mask as the pipeline produces it: what an item's row keeps of each.

:func:`~gloper_jobs.jobs.pipeline.process_photo` makes a :class:`CandidateRecord` per
candidate (the evaluate kind one per stored mask it scores);
:func:`~gloper_jobs.store.repository.record_success` writes them. Nothing here imports
the store or a method, so the kinds and the store can both name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate's row as the pipeline produces it.

    ``mask_path`` is its full-resolution PNG (a file, or an ``s3://`` object once published;
    empty when none was written); ``scores`` its Dice, IoU, precision and recall against
    the label (None without one).
    """

    name: str
    mask_path: str
    is_choice: bool
    derived: bool
    pattern_fraction: float
    scores: dict[str, float] | None
    #: the mask as a COCO RLE at the method's working size (``{"size": [h, w], "counts": str}``)
    rle: dict[str, Any] | None = None
