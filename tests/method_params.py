"""Small, fast parameters per registered method, for the registry-wide tests.

A method not listed here is tested with its defaults, so a new method is covered
without editing any test; list it here only when its defaults are too slow.
The pretrained baselines also need weights: tiny random models of the real
architectures, built on first use (``tests/deep_fixtures.py``).
"""

from __future__ import annotations

from typing import Any

FAST_PARAMS: dict[str, dict[str, Any]] = {
    "gloper": {"size": 32, "local_sizes": (4, 8), "steps": 3, "device": "cpu"},
    "kmeans": {"size": 64, "attempts": 3},
    "watershed": {"size": 64},
}


def fast_params(name: str) -> dict[str, Any]:
    from tests.deep_fixtures import TINY_PARAMS, tiny_params

    if name in TINY_PARAMS:
        return tiny_params(name)
    return dict(FAST_PARAMS.get(name, {}))
