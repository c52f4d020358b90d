"""Pattern Dice, IoU, precision and recall of binary masks.

Both masks are ``HxW bool`` of the same shape (see :func:`scores_at`, which
brings a prediction and a label to the evaluation size first).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gloper_jobs.data.images import resize_mask


@dataclass(frozen=True)
class Scores:
    """Overlap of a predicted pattern mask with its label, each in [0, 1]."""

    dice: float
    iou: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def dice(a: Any, b: Any) -> float:
    """Dice = 2|A&B|/(|A|+|B|) of two same-shape bool masks (numpy arrays or torch tensors);
    1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def iou(a: Any, b: Any) -> float:
    """IoU = |A&B|/|A|B| of two same-shape bool masks (numpy arrays or torch tensors);
    1.0 when both are empty."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def scores(pred: np.ndarray, label: np.ndarray) -> Scores:
    """Dice, IoU, precision and recall over the whole frame.

    Two empty masks agree perfectly (all 1.0); an empty prediction of a
    non-empty label scores 0.
    """
    if pred.shape != label.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {label.shape}")
    p = pred.astype(bool)
    lab = label.astype(bool)
    tp = float(np.count_nonzero(p & lab))
    np_ = float(np.count_nonzero(p))
    nl = float(np.count_nonzero(lab))
    if np_ == 0 and nl == 0:
        return Scores(1.0, 1.0, 1.0, 1.0)
    return Scores(
        dice=dice(p, lab),
        iou=iou(p, lab),
        precision=tp / np_ if np_ else 0.0,
        recall=tp / nl if nl else 0.0,
    )


def scores_at(pred: np.ndarray, label: np.ndarray, size: int) -> Scores:
    """:func:`scores` after resizing both ``HxW bool`` masks to ``size x size`` (nearest)."""
    return scores(resize_mask(pred, (size, size)), resize_mask(label, (size, size)))
