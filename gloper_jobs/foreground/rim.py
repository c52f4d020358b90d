"""The foreground's rim: the band along the animal's outline that no pattern mask keeps.

u2netp's foreground takes in a rim of background (shadow, grass, a dark wall) along the
outline, and the darker reading marks it as pattern; the pattern labels stop short of the
body's edge. :func:`trim_rim` drops every mask pixel within ``rim`` x the mask's longer
side of the outline (chessboard distance, so an integer width is exactly that many 3x3
erosions). The frame's own edge is no outline: an animal cut by the frame keeps its
pattern there, and a whole-frame foreground trims nothing.
"""

from __future__ import annotations

import cv2
import numpy as np

from gloper_jobs.data.images import resize_mask


def rim_width(shape: tuple[int, ...], rim: float) -> float:
    """The band's width in pixels of a mask of ``shape``."""
    return rim * max(shape[:2])


def inner_foreground(foreground: np.ndarray, shape: tuple[int, ...], rim: float) -> np.ndarray:
    """``foreground`` (any size) at ``shape``, less its rim (``HxW bool``)."""
    fg = resize_mask(foreground, (shape[0], shape[1]))
    width = rim_width(shape, rim)
    if width <= 0 or fg.all() or not fg.any():
        return fg
    # distance of every foreground pixel to the nearest background pixel; pixels beyond the
    # frame count as foreground, so the frame's edge is not an outline
    dist = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_C, 3)
    return np.asarray(dist > width)


def trim_rim(masks: dict[str, np.ndarray], foreground: np.ndarray, rim: float) -> dict[str, np.ndarray]:
    """Every mask less the foreground's rim (masks of one shape share the computation)."""
    if rim <= 0:
        return masks
    inner: dict[tuple[int, ...], np.ndarray] = {}
    out = {}
    for name, mask in masks.items():
        if mask.shape not in inner:
            inner[mask.shape] = inner_foreground(foreground, mask.shape, rim)
        out[name] = mask & inner[mask.shape]
    return out
