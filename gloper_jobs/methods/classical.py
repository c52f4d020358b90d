"""The classical baselines of METHOD.md: k-means and watershed (OpenCV).

Both run on the photo resized to ``size x size`` (aspect ratio not kept, as
GloPER does) with the foreground resized the same way (nearest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import cv2
import numpy as np

from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.base import (
    MethodParams,
    Segmentation,
    SegmentContext,
    Segmenter,
    check_size,
)
from gloper_jobs.methods.choice import (
    KMEANS_SAMPLE,
    check_polarity,
    choose_polarity,
    cluster_colours,
)

KMEANS_CHOICES = ("polarity", "smaller")


#: both classical baselines: S=256 on a CPU, the paper's S=1024 one flag away
CLASSICAL_PROFILES: dict[str, dict[str, Any]] = {"cpu": {}, "paper": {"size": 1024}}


@dataclass(frozen=True)
class KMeansParams(MethodParams):
    """k-means on foreground RGB: ``k`` clusters, ``attempts`` random restarts on a sample
    of ``sample`` pixels, then one run on all of them (``sample=0``: restarts on all).

    ``choice=polarity`` takes the darkest or the lightest cluster as ``polarity`` says
    (``auto``: the shared label-free rule of :mod:`gloper_jobs.methods.choice`, which
    GloPER uses too); ``choice=smaller`` the smallest cluster.
    """

    size: int = 256
    k: int = 2
    attempts: int = 20
    max_iter: int = 100
    epsilon: float = 1.0
    seed: int = 41
    sample: int = KMEANS_SAMPLE
    choice: str = "polarity"
    polarity: str = "auto"

    def validate(self) -> None:
        check_size(self.size)
        if self.sample < 0:
            raise InvalidParameterError(f"sample={self.sample} must be >= 0 (0: every restart on every pixel)")
        if not 2 <= self.k <= 16:
            raise InvalidParameterError(f"k={self.k} must be between 2 and 16")
        if self.attempts < 1 or self.max_iter < 1 or self.epsilon <= 0:
            raise InvalidParameterError("attempts and max_iter must be >= 1 and epsilon > 0")
        if self.choice in ("darker", "lighter"):
            raise InvalidParameterError(
                f"choice={self.choice!r} is now --param polarity={self.choice} (choice=polarity is the default)"
            )
        if self.choice not in KMEANS_CHOICES:
            raise InvalidParameterError(
                f"choice={self.choice!r}: use one of {', '.join(KMEANS_CHOICES)}"
            )
        check_polarity(self.polarity)


class KMeansSegmenter(Segmenter):
    """OpenCV k-means on the foreground pixels in RGB; one candidate per cluster.

    Clusters are named ``cluster_0`` .. ``cluster_{k-1}`` from darkest to
    lightest centre, so names are stable across runs. k-means cannot know which
    cluster is the pattern: the label-free choice is the darkest or the lightest
    cluster as the shared polarity rule calls it (``polarity=auto``, the default),
    the darkest with ``polarity=darker`` (the paper's reading), the lightest with
    ``polarity=lighter``, the smallest with ``choice=smaller``.
    """

    name = "kmeans"
    Params = KMeansParams
    profiles: ClassVar = CLASSICAL_PROFILES

    @classmethod
    def choice_params(cls, candidate: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """``cluster_0`` is ``polarity=darker``, the lightest cluster ``polarity=lighter``."""
        lightest = f"cluster_{int(params.get('k', 2)) - 1}"
        polarity = {"cluster_0": "darker", lightest: "lighter"}.get(candidate)
        return None if polarity is None else {"choice": "polarity", "polarity": polarity}

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None) -> Segmentation:
        p = cast(KMeansParams, self.params)
        img, fg = self.working_inputs(image, foreground)
        pixels = img[fg].astype(np.float32)
        empty = np.zeros(fg.shape, dtype=bool)
        if len(pixels) < p.k:
            blank = {f"cluster_{i}": empty.copy() for i in range(p.k)}
            return Segmentation(blank, "cluster_0", info={"note": "foreground too small"})
        labels, centres = cluster_colours(pixels, p.k, p.attempts, p.max_iter, p.epsilon, p.seed, p.sample)
        masks: dict[str, np.ndarray] = {}
        sizes: list[int] = []
        for rank in range(p.k):
            m = empty.copy()
            m[fg] = labels == rank
            masks[f"cluster_{rank}"] = m
            sizes.append(int(m.sum()))
        picked = choose_polarity(p.polarity, [masks["cluster_0"]], fg)
        options = {"darker": "cluster_0", "lighter": f"cluster_{p.k - 1}"}
        choice = f"cluster_{int(np.argmin(sizes))}" if p.choice == "smaller" else options[picked.polarity]
        info = {"centres_rgb": centres.round(1).tolist(), "polarity": picked.as_info(options)}
        return Segmentation(masks, choice, info=info)


@dataclass(frozen=True)
class WatershedParams(MethodParams):
    """Watershed on the grayscale photo (parameters as in the authors' baseline)."""

    size: int = 256
    blur: int = 5
    open_iterations: int = 2
    dilate_iterations: int = 3
    fg_fraction: float = 0.1

    def validate(self) -> None:
        check_size(self.size)
        if self.blur < 1 or self.blur % 2 == 0:
            raise InvalidParameterError(f"blur={self.blur} must be an odd kernel size >= 1")
        if not 0 < self.fg_fraction < 1:
            raise InvalidParameterError("fg_fraction must be in (0, 1)")
        if self.open_iterations < 0 or self.dilate_iterations < 1:
            raise InvalidParameterError("open_iterations >= 0 and dilate_iterations >= 1")


class WatershedSegmenter(Segmenter):
    """Gaussian blur, inverted Otsu, opening, distance-transform markers, ``cv2.watershed``.

    Pattern = regions labelled > 1, restricted to the foreground: one candidate.
    """

    name = "watershed"
    Params = WatershedParams
    profiles: ClassVar = CLASSICAL_PROFILES

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: SegmentContext | None = None) -> Segmentation:
        p = cast(WatershedParams, self.params)
        img, fg_bool = self.working_inputs(image, foreground)
        fg = fg_bool.astype(np.uint8)
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        blurred = cv2.GaussianBlur(gray, (p.blur, p.blur), 0)
        _, thresh = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
        kernel = np.ones((3, 3), np.uint8)
        opening = cv2.morphologyEx(thresh, cv2.MORPH_OPEN, kernel, iterations=p.open_iterations)
        sure_bg = cv2.dilate(opening, kernel, iterations=p.dilate_iterations)
        dist = cv2.distanceTransform(opening, cv2.DIST_L2, 5)
        _, sure_fg = cv2.threshold(dist, p.fg_fraction * float(dist.max()), 255, 0)
        sure_fg = sure_fg.astype(np.uint8) * fg
        unknown = cv2.subtract(sure_bg, sure_fg)
        _, markers = cv2.connectedComponents(sure_fg)
        markers = markers + 1
        markers[unknown == 255] = 0
        markers = cv2.watershed(np.ascontiguousarray(img[..., ::-1]), markers.astype(np.int32))
        pattern = (markers > 1) & fg.astype(bool)
        return Segmentation({"pattern": pattern}, "pattern")
