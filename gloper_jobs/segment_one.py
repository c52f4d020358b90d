"""Segmenting a single photo outside any job (``gloper segment``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gloper_jobs.images import load_image, resize_mask
from gloper_jobs.methods.base import SegmentContext
from gloper_jobs.outputs import write_mask, write_overlay
from gloper_jobs.runner import build_foreground, build_segmenter, configure_torch
from gloper_jobs.settings import Settings


@dataclass(frozen=True)
class SegmentResult:
    """Paths of the masks written (by candidate name), the choice, and the overlay."""

    masks: dict[str, Path]
    choice: str
    overlay: Path
    foreground_fallback: bool


def segment_image(image_path: Path, method: str, settings: Settings, out_dir: Path, profile: str | None = None,
                  params: dict[str, Any] | None = None, species: str | None = None,
                  foreground: bool = True) -> SegmentResult:
    """Write ``<out_dir>/<candidate>.png`` at the photo's size and ``overlay.png`` of the choice."""
    configure_torch(settings)
    segmenter = build_segmenter(method, settings, profile, params)
    fg_fn = build_foreground(settings, foreground)
    image = load_image(image_path, settings.max_image_pixels)
    h, w = image.shape[:2]
    from gloper_jobs.foreground import whole_frame

    fg = fg_fn(image) if fg_fn is not None else whole_frame(image)
    seg = segmenter.segment(image, fg.mask, SegmentContext(species=species, name=image_path.name))
    paths: dict[str, Path] = {}
    for name, mask in seg.resized(h, w).items():
        paths[name] = out_dir / f"{name}.png"
        write_mask(paths[name], mask)
    overlay = out_dir / "overlay.png"
    write_overlay(overlay, image, resize_mask(seg.candidates[seg.choice], (h, w)), fg.mask)
    return SegmentResult(paths, seg.choice, overlay, fg.fallback)
