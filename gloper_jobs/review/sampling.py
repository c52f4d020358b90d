"""Which photos of a species a review page shows: pages spread over all of them.

A species' ``n`` photos (its items in id order) are cut into ``k`` equal stripes
(``k`` photos a page). Page 1 shows the middle photo of every stripe; the next pages
the photos at the stripes' quarter points, then the eighths, ... (the base-2 van der
Corput sequence), each photo only the first time it comes up, ``k`` a page. So page 1 is spread
over the whole species (not its first photos), every later page fills the gaps the
earlier ones left, and over all pages every photo is shown exactly once. Deterministic:
the same ``n`` and ``k`` give the same pages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def page_count(n: int, k: int) -> int:
    """Pages of ``k`` photos that show all ``n`` photos once (0 for none)."""
    return 0 if n <= 0 else math.ceil(n / k)


@lru_cache(maxsize=64)
def spread_order(n: int, k: int) -> np.ndarray:
    """Every position in ``range(n)`` once (``int64``), in the order pages take them.

    The species is cut into ``k`` equal stripes; the points ``(j + x) * n / k`` for each
    stripe ``j``, with ``x`` running over the van der Corput points ``0.5, 0.25, 0.75,
    0.125, ...`` (``2**b`` of them, ``2**b >= n / k``, so every position is hit) and 0
    last; the first occurrence of each position counts.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    bits = max(1, (math.ceil(n / k) - 1).bit_length())
    m = np.arange(1 << bits, dtype=np.int64)
    rev = np.zeros_like(m)
    for b in range(bits):
        rev |= ((m >> b) & 1) << (bits - 1 - b)
    rev = np.concatenate([rev[1:], rev[:1]])  # 0.5, 0.25, 0.75, ... and 0 last
    stripes = np.arange(k, dtype=np.int64)
    pos = (((stripes[None, :] << bits) + rev[:, None]) * n // (k << bits)).ravel()
    _, first = np.unique(pos, return_index=True)
    return np.asarray(pos[np.sort(first)])


def page_positions(n: int, k: int, page: int) -> list[int]:
    """Positions (0-based, ascending) into ``n`` photos that page ``page`` (1-based) shows.

    Raises ``ValueError`` for ``k < 1``; a page past the last is empty.
    """
    if k < 1:
        raise ValueError(f"photos per page must be at least 1, not {k}")
    if not 1 <= page <= page_count(n, k):
        return []
    return sorted(int(i) for i in spread_order(n, k)[(page - 1) * k:page * k])


def page_of(items: Sequence[T], k: int, page: int) -> list[T]:
    """The elements of ``items`` (in id order) that page ``page`` shows."""
    return [items[i] for i in page_positions(len(items), k, page)]
