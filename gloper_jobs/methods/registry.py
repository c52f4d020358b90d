"""The one registry of segmentation methods.

Adding a method is one module and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

from typing import Any

from gloper_jobs.exceptions import InvalidParameterError, UnknownMethodError
from gloper_jobs.methods.base import Segmenter
from gloper_jobs.methods.classical import KMeansSegmenter, WatershedSegmenter
from gloper_jobs.methods.clipseg import ClipSegSegmenter
from gloper_jobs.methods.dino import DinoSegmenter
from gloper_jobs.methods.gloper import GloperSegmenter
from gloper_jobs.methods.sam import SamSegmenter

#: method name -> Segmenter class (a builder taking validated params)
REGISTRY: dict[str, type[Segmenter]] = {
    GloperSegmenter.name: GloperSegmenter,
    KMeansSegmenter.name: KMeansSegmenter,
    WatershedSegmenter.name: WatershedSegmenter,
    SamSegmenter.name: SamSegmenter,
    ClipSegSegmenter.name: ClipSegSegmenter,
    DinoSegmenter.name: DinoSegmenter,
}


def list_segmenters() -> list[str]:
    """Registered method names, sorted."""
    return sorted(REGISTRY)


def get_segmenter_class(name: str) -> type[Segmenter]:
    """The class registered as ``name``; :class:`UnknownMethodError` lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(
            f"unknown method {name!r}; valid methods: {', '.join(list_segmenters())}"
        ) from None


def resolve_params(name: str, profile: str | None = None, **params: Any) -> dict[str, Any]:
    """A profile's parameters overlaid with explicit ``params`` (profile ``cpu`` by default)."""
    cls = get_segmenter_class(name)
    prof = profile or "cpu"
    if prof not in cls.profiles:
        raise InvalidParameterError(
            f"method {name!r} has no profile {prof!r}; valid profiles: {', '.join(cls.profiles)}"
        )
    return {**cls.profiles[prof], **params}


def create_segmenter(name: str, profile: str | None = None, **params: Any) -> Segmenter:
    """Build method ``name`` with a profile and parameters, validated.

    Raises :class:`UnknownMethodError` or :class:`InvalidParameterError`, each
    listing what is valid.
    """
    cls = get_segmenter_class(name)
    merged = resolve_params(name, profile, **params)
    return cls(cls.Params.build(**merged))


