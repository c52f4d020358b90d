"""A method that does nothing (its one candidate is the foreground), for the queue-overhead bench.

Registered (:func:`register_segmenter`) when imported (``GLOPER_PLUGINS=bench.noop_plugin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gloper_jobs.methods.base import MethodParams, Segmentation, SegmentContext, Segmenter
from gloper_jobs.methods.registry import register_segmenter


@dataclass(frozen=True)
class NoopParams(MethodParams):
    """No parameters."""


@register_segmenter
class NoopSegmenter(Segmenter):
    """Returns the foreground (``HxW bool``) as its only candidate, ``all``."""

    name = "noop"
    Params = NoopParams
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}}

    def segment(self, image: np.ndarray, foreground: np.ndarray,
                context: SegmentContext | None = None) -> Segmentation:
        return Segmentation({"all": foreground.copy()}, "all")

