"""Segmenters kept alive per process, so weights load once (at most ``capacity`` at a time).

A worker process asks :meth:`SegmenterCache.get` for every item; the same
(method, parameters) returns the same object. With ``capacity=1`` (the default,
one large model per card) asking for another method closes the old one first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gloper_jobs.methods.base import Segmenter


class SegmenterCache:
    """A small LRU of built segmenters keyed by method, profile and parameters."""

    def __init__(self, builder: Callable[..., Segmenter], capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._builder = builder
        self._capacity = capacity
        self._items: OrderedDict[str, Segmenter] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0

    @staticmethod
    def key(method: str, profile: str | None, params: dict[str, Any]) -> str:
        return json.dumps([method, profile, params], sort_keys=True, default=str)

    def get(self, method: str, profile: str | None = None, params: dict[str, Any] | None = None) -> Segmenter:
        """The cached segmenter for these arguments, built (and others evicted) if needed."""
        params = params or {}
        k = self.key(method, profile, params)
        with self._lock:
            if k in self._items:
                self._items.move_to_end(k)
                return self._items[k]
            while len(self._items) >= self._capacity:
                _, old = self._items.popitem(last=False)
                old.close()
            seg = self._builder(method, profile, params)
            self.builds += 1
            self._items[k] = seg
            return seg

    def clear(self) -> None:
        with self._lock:
            while self._items:
                self._items.popitem(last=False)[1].close()
