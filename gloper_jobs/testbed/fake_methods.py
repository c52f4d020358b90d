"""Fake methods for the fault and overhead runs of the tests and benchmarks.

Registered when imported: by workers and the submitter through
``GLOPER_PLUGINS=gloper_jobs.testbed.fake_methods``. ``noop`` returns the foreground
(the queue's own cost). ``worker_killer``: photos whose name contains ``kill`` SIGKILL
the process that segments them, as a segfault or the OOM killer would; the others are
segmented by k-means. ``slow_logger`` sleeps per photo and logs each run's start and end,
for :func:`overlapping_runs`.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from gloper_jobs.data.images import resize_mask
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.methods.base import MethodParams, Segmentation, SegmentContext, Segmenter
from gloper_jobs.methods.classical import KMeansSegmenter
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


#: the longest a ``hold`` keeps a photo, s
HOLD_MAX_S = 600.0


@dataclass(frozen=True)
class SlowLoggerParams(MethodParams):
    """``seconds`` asleep per photo; each run appends ``start``/``end`` lines to ``log``.
    ``hold``: a file; while it exists and holds the inode of this process's network
    namespace, photos are held before they finish (at most ``HOLD_MAX_S``): a partition
    test keeps a cut-off node's items running until after the heal."""

    size: int = 32
    seconds: float = 2.0
    log: str = ""
    hold: str = ""

    def validate(self) -> None:
        if self.seconds < 0:
            raise InvalidParameterError("seconds must be >= 0")


@register_segmenter
class SlowLogger(Segmenter):
    """A slow fake method that records when each photo ran in which process, so a test can
    find two runs of one photo that overlapped (a concurrent double run)."""

    name = "slow_logger"
    Params = SlowLoggerParams
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}}

    def segment(self, image: np.ndarray, foreground: np.ndarray,
                context: SegmentContext | None = None) -> Segmentation:
        p = cast(SlowLoggerParams, self.params)
        name = context.name if context is not None and context.name else "?"
        self._log(p.log, f"start {name} {os.getpid()} {time.time():.3f}")
        time.sleep(p.seconds)
        if p.hold:
            self._held(Path(p.hold))
        self._log(p.log, f"end {name} {os.getpid()} {time.time():.3f}")
        mask = resize_mask(foreground, (p.size, p.size))
        return Segmentation({"all": mask}, "all")

    @staticmethod
    def _held(hold: Path) -> None:
        here = str(os.stat("/proc/self/ns/net").st_ino)
        deadline = time.monotonic() + HOLD_MAX_S
        while time.monotonic() < deadline:
            try:
                if hold.read_text().strip() != here:
                    return
            except FileNotFoundError:
                return
            time.sleep(0.2)

    @staticmethod
    def _log(path: str, line: str) -> None:
        if path:
            with open(path, "a", encoding="utf-8") as fh:  # one short append per line: atomic
                fh.write(line + "\n")
