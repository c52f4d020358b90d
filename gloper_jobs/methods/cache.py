"""Segmenters kept alive per process, so weights load once (at most ``capacity`` at a time).

A worker process asks :meth:`SegmenterCache.get` for every item; the same
(method, parameters) returns the same object. With ``capacity=1`` (the default,
one large model per card) asking for another method closes the old one first.

Items that run at once (the embedded run's threads) hold a segmenter with
:meth:`SegmenterCache.lease`: one evicted while another thread still uses it is closed
when that thread lets it go, not under it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        self._lock = threading.RLock()
        #: leases held per segmenter (by id), and evicted segmenters still leased
        self._users: dict[int, int] = {}
        self._retired: dict[int, Segmenter] = {}
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
                if self._users.get(id(old)):
                    self._retired[id(old)] = old  # closed by its last lease's release
                else:
                    old.close()
            seg = self._builder(method, profile, params)
            self.builds += 1
            self._items[k] = seg
            return seg

    @contextmanager
    def lease(self, method: str, profile: str | None = None,
              params: dict[str, Any] | None = None) -> Iterator[Segmenter]:
        """:meth:`get`, held for the ``with`` block: eviction by another thread meanwhile
        closes it only when the block ends."""
        with self._lock:
            seg = self.get(method, profile, params)
            self._users[id(seg)] = self._users.get(id(seg), 0) + 1
        try:
            yield seg
        finally:
            with self._lock:
                left = self._users[id(seg)] - 1
                if left:
                    self._users[id(seg)] = left
                else:
                    del self._users[id(seg)]
                    retired = self._retired.pop(id(seg), None)
                    if retired is not None:
                        retired.close()

    def clear(self) -> None:
        """Close every cached segmenter (callers first let their leases go)."""
        with self._lock:
            while self._items:
                self._items.popitem(last=False)[1].close()
            while self._retired:
                self._retired.popitem()[1].close()
            self._users.clear()
