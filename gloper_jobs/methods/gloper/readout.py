"""GloPER's read-out: masks from the per-size weight maps, in both polarities, and the
label-free choice among them (which local size or fusion, which colour).

The network's read-out (:func:`~gloper_jobs.methods.gloper.net.pattern_weight`)
gives ``w``, the weight of the darker centroid of each window; the lighter colour's
weight is ``1 - w``. Candidates: ``local_<l>`` (darker colour, the paper's reading)
and ``local_<l>_lighter`` per local size, and two derived masks per polarity:
``fused`` / ``fused_lighter`` (majority vote of the sizes) and ``consensus`` /
``consensus_lighter`` (the fused mask where the photo's global two-colour split,
:func:`~gloper_jobs.methods.choice.colour_split`, agrees: a window without any
pattern still has a darker half, which the global split does not call pattern).
The polarity rules look at the same global split (and, for the suggestion's agreement
across local sizes, at each size's own darker mask).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from gloper_jobs.methods.choice import choose_polarity, colour_split

LIGHTER_SUFFIX = "_lighter"


def candidate_name(base: str, polarity: str) -> str:
    """``local_8`` / ``fused`` for the darker colour, ``local_8_lighter`` / ``fused_lighter`` else."""
    return base + LIGHTER_SUFFIX if polarity == "lighter" else base


def _area_resize(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``HxW bool`` -> ``shape`` by the majority of the pixels each output pixel covers
    (nearest neighbour would keep one pixel in four of a 256 -> 128 split)."""
    if mask.shape == shape:
        return mask.copy()
    area = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return np.asarray(area > 0.5)


@dataclass
class ReadOut:
    """Candidate masks (``SxS bool``, within the foreground), the chosen name, the derived
    names, and the choice's report for ``Segmentation.info``."""

    candidates: dict[str, np.ndarray]
    choice: str
    derived: frozenset[str]
    info: dict[str, Any]


def read_out(
    image: np.ndarray,
    foreground: np.ndarray,
    weights: Mapping[int, np.ndarray],
    fg: np.ndarray,
    rho: float,
    choice: str,
    polarity: str,
) -> ReadOut:
    """Masks of every local size in both polarities, the derived masks, and the label-free choice.

    ``image``: the photo, ``HxWx3 uint8 RGB``; ``foreground``: its ``HxW bool``
    foreground; ``weights``: local size -> ``SxS float32`` darker-colour weight in
    [0, 1]; ``fg``: the foreground at ``SxS bool``. ``choice``: ``fused``,
    ``consensus`` or ``local_<l>``; ``polarity``: ``auto``, ``darker`` or ``lighter``.
    A pixel is pattern when its colour's weight exceeds ``rho``.
    """
    candidates: dict[str, np.ndarray] = {}
    for ls, w in weights.items():
        candidates[f"local_{ls}"] = (w > rho) & fg
        candidates[f"local_{ls}{LIGHTER_SUFFIX}"] = (1.0 - w > rho) & fg
    darker, fg_e = colour_split(image, foreground)
    darker_s = _area_resize(darker, fg.shape)
    for pol, split in (("darker", darker_s), ("lighter", fg & ~darker_s)):
        votes = np.sum([candidates[candidate_name(f"local_{ls}", pol)] for ls in weights], axis=0)
        fused = votes * 2 > len(weights)
        if len(weights) > 1:
            candidates[candidate_name("fused", pol)] = fused
        candidates[candidate_name("consensus", pol)] = fused & split
    derived = frozenset(n for n in candidates if not n.startswith("local_"))
    base = choice if choice in candidates else f"local_{next(iter(weights))}"
    local = {str(ls): candidates[f"local_{ls}"] for ls in weights}
    picked = choose_polarity(polarity, [darker], fg_e, local_darker=local, local_fg=fg)
    options = {pol: candidate_name(base, pol) for pol in ("darker", "lighter")}
    return ReadOut(candidates, options[picked.polarity], derived, {"polarity": picked.as_info(options)})
