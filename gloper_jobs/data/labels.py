"""Finding and reading hand-made pattern labels.

Layout (the authors'): ``<folder>/<photo>`` and ``<folder>/label/<label>`` or
``<folder>/labels/<label>``. The label has the photo's base name; its
extension may differ, and a photo may carry a doubled extension
(``x.png.jpg`` pairs with ``x.png``). Names match case-insensitively.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gloper_jobs import defaults
from gloper_jobs.exceptions import LabelError

LABEL_DIRNAMES = ("label", "labels")


def base_key(name: str) -> str:
    """Lower-case file name with every trailing image extension removed (``X.png.JPG`` -> ``x``)."""
    key = name.lower()
    changed = True
    while changed:
        changed = False
        for ext in defaults.IMAGE_EXTENSIONS:
            if key.endswith(ext) and len(key) > len(ext):
                key = key[: -len(ext)]
                changed = True
    return key


def index_label_dir(folder: Path) -> dict[str, Path]:
    """Map :func:`base_key` to label path for the ``label``/``labels`` folders under ``folder``."""
    index: dict[str, Path] = {}
    for dirname in LABEL_DIRNAMES:
        for candidate in (folder / dirname, folder / dirname.capitalize()):
            if candidate.is_dir():
                for entry in sorted(candidate.iterdir()):
                    if entry.is_file() and not entry.name.startswith("."):
                        index.setdefault(base_key(entry.name), entry)
    return index


def find_label(photo: Path) -> Path | None:
    """The label file of ``photo``, or None when it has none."""
    return index_label_dir(photo.parent).get(base_key(photo.name))


def load_label(path: Path) -> np.ndarray:
    """Read a label as ``HxW bool`` (True = pattern) at the label's own size.

    RGB or grayscale: pattern is luminance < 128 (black). RGBA: pattern is
    alpha > 127 and luminance < 128 (opaque black). Thresholds absorb JPEG noise.
    Raises :class:`LabelError` if the file is not a readable image.
    """
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # type: ignore[assignment]
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            if has_alpha:
                rgba = np.asarray(img.convert("RGBA"))
                lum = np.asarray(Image.fromarray(rgba[..., :3]).convert("L"))
                return (rgba[..., 3] > 127) & (lum < 128)
            if img.mode.startswith("I;16"):
                lum16 = np.asarray(img, dtype=np.float64) / 257.0
                return lum16 < 128
            return np.asarray(img.convert("L")) < 128
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise LabelError(f"{defaults.NOTE_LABEL_UNREADABLE}: {path} cannot be read ({exc}); not scored: fix or "
                         "remove the file") from exc


def shape_mismatch(path: Path | str, label_shape: tuple[int, ...], photo_size: tuple[int, int]) -> str | None:
    """Why a label cannot score its photo, or None: its aspect ratio (``label_shape``, ``HxW``)
    differs from the photo's (``photo_size``, ``(height, width)``) by more than
    :data:`~gloper_jobs.defaults.LABEL_ASPECT_TOLERANCE` (a label of another photo, or cropped):
    resized onto the photo it would be stretched and scored as if it fitted. The message
    starts with :data:`~gloper_jobs.defaults.NOTE_LABEL_SHAPE` and says how to fix it."""
    lh, lw = int(label_shape[0]), int(label_shape[1])
    ph, pw = photo_size
    if min(lh, lw, ph, pw) <= 0:
        return None
    off = abs((lw / lh) / (pw / ph) - 1.0)
    if off <= defaults.LABEL_ASPECT_TOLERANCE:
        return None
    return (f"{defaults.NOTE_LABEL_SHAPE}: {path} is {lw}x{lh}, its photo {pw}x{ph} (aspect ratios differ by "
            f"{off:.0%}, more than {defaults.LABEL_ASPECT_TOLERANCE:.0%}): not scored; give the label the "
            "photo's shape (the same drawing at the photo's size), or remove it if it belongs to another photo")

