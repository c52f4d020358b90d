"""Writing masks and overlays atomically: a file is either complete or absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

TMP_MARK = ".partial-"


def _atomic_save(img: Image.Image, path: Path, **kwargs: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_MARK}{os.getpid()}-{path.name}")
    img.save(tmp, format="PNG", **kwargs)
    os.replace(tmp, path)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Save ``HxW bool`` as a 1-bit PNG (white = pattern), atomically."""
    _atomic_save(Image.fromarray(mask.astype(bool)).convert("1"), path, optimize=True)


def read_mask(path: Path) -> np.ndarray:
    """Read a mask PNG written by :func:`write_mask` back as ``HxW bool``."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


def write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, foreground: np.ndarray | None = None,
                  colour: tuple[int, int, int] = (255, 0, 64), alpha: float = 0.55) -> None:
    """Save the photo (``HxWx3 uint8 RGB``) with the pattern mask tinted, background dimmed."""
    out = image.astype(np.float32)
    if foreground is not None:
        out[~foreground] *= 0.35
    tint = np.array(colour, dtype=np.float32)
    out[mask] = out[mask] * (1 - alpha) + tint * alpha
    _atomic_save(Image.fromarray(out.clip(0, 255).astype(np.uint8)), path)


def clean_partial(folder: Path) -> int:
    """Delete half-written files a killed run left in ``folder``; returns how many."""
    if not folder.is_dir():
        return 0
    removed = 0
    for p in folder.iterdir():
        if p.name.startswith(TMP_MARK):
            p.unlink(missing_ok=True)
            removed += 1
    return removed
