"""A method that kills its own worker process on chosen photos, for the fault tests.

Imported by workers and the submitter through ``GLOPER_PLUGINS=fault_plugin``
(the ``tests`` folder on ``PYTHONPATH``). Photos whose name contains ``kill``
SIGKILL the process that segments them, as a segfault or the OOM killer would;
the others are segmented by k-means.
"""

from __future__ import annotations

import os
import signal
from typing import Any, ClassVar

import numpy as np

from gloper_jobs.methods.base import Segmentation, SegmentContext
from gloper_jobs.methods.classical import KMeansSegmenter
from gloper_jobs.methods.registry import register_segmenter


@register_segmenter
class WorkerKiller(KMeansSegmenter):
    """k-means, except that a photo named ``*kill*`` kills the process."""

    name = "worker_killer"
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}}

    def segment(self, image: np.ndarray, foreground: np.ndarray,
                context: SegmentContext | None = None) -> Segmentation:
        if context is not None and context.name and "kill" in context.name:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().segment(image, foreground, context)

