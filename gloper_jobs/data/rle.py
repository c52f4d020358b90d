"""COCO run-length encoding of masks, through pycocotools (the reference implementation)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_util


@dataclass(frozen=True)
class Rle:
    """A compressed COCO RLE: ``counts`` (the COCO string), ``height``, ``width``, and derived
    ``area`` (pattern pixels) and ``bbox`` (``[x, y, w, h]`` in pixels, COCO's convention)."""

    counts: str
    height: int
    width: int
    area: int
    bbox: list[float]

    def as_coco(self) -> dict[str, object]:
        """The COCO ``segmentation`` object: ``{"size": [h, w], "counts": str}``."""
        return {"size": [self.height, self.width], "counts": self.counts}


def encode(mask: np.ndarray) -> Rle:
    """Encode an ``HxW bool`` mask (True = pattern)."""
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    return Rle(
        counts=rle["counts"].decode("ascii"), height=int(rle["size"][0]), width=int(rle["size"][1]),
        area=int(mask_util.area(rle)), bbox=[float(v) for v in mask_util.toBbox(rle)],
    )


def decode(counts: str, height: int, width: int) -> np.ndarray:
    """Decode a COCO RLE back to an ``HxW bool`` mask."""
    rle = {"size": [int(height), int(width)], "counts": counts.encode("ascii")}
    return np.asarray(mask_util.decode(rle), dtype=bool)
