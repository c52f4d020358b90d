"""Segmentation methods, their registry and factory, and the per-process segmenter cache.

Importing this package is light: the registry (which imports every method, and so
torch) loads on first use of one of its names, so a worker's main process can import
the job kinds without loading torch before it forks.
"""

from __future__ import annotations

from typing import Any

from gloper_jobs.methods.base import Segmentation, SegmentContext, Segmenter

_REGISTRY_NAMES = ("build_segmenter", "create_segmenter", "get_segmenter_class", "list_segmenters",
                   "load_plugins", "register_segmenter")

__all__ = ["SegmentContext", "Segmentation", "Segmenter", *_REGISTRY_NAMES]


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from gloper_jobs.methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
