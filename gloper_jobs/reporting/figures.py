"""The report's pictures as ``data:`` URIs: the Dice plot (matplotlib, Agg) and the thumbnails."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from gloper_jobs import defaults
from gloper_jobs.data.images import load_image, load_photo, resize_mask
from gloper_jobs.data.outputs import read_mask
from gloper_jobs.storage import local_copy

OVERLAY_RGB = (255, 0, 64)
#: a reading's picture: the pattern tinted this much, the rest of the photo kept at this brightness
READING_TINT = 0.5
READING_DIM = 0.4


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def _encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return data_uri(buf.getvalue(), f"image/{fmt.lower()}")


def distribution_plot(series: Mapping[str, Sequence[float]], xlabel: str) -> str:
    """A histogram of each named series over [0, 1] (20 bins), as a PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.8), dpi=100)
    ax = fig.subplots()
    bins = [i / 20 for i in range(21)]
    for name, values in series.items():
        ax.hist(list(values), bins=bins, histtype="step", linewidth=2, label=f"{name} (n={len(values)})")
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("photos")
    ax.legend(loc="best", frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return data_uri(buf.getvalue())


def _fit(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``(h, w)`` scaled so the longest side is ``side`` (never upscaled)."""
    h, w = size
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _mask(mask: np.ndarray | Path | str) -> np.ndarray:
    """``HxW bool``: the array itself, or the PNG it names."""
    return mask if isinstance(mask, np.ndarray) else read_mask(mask)


def overlay_thumbnail(photo: Path | str, mask_path: np.ndarray | Path | str,
                      side: int = defaults.REPORT_THUMB_SIDE) -> str:
    """The photo (longest side ``side``) with the mask (``HxW bool``, or its PNG) tinted,
    as a JPEG data URI."""
    with local_copy(photo) as local:  # an s3:// photo is streamed to a temporary file
        image = load_image(local)
    h, w = _fit(image.shape[:2], side)
    small = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    mask = np.asarray(Image.fromarray(_mask(mask_path)).resize((w, h), Image.Resampling.NEAREST))
    small[mask] = small[mask] * 0.45 + np.array(OVERLAY_RGB, dtype=np.float32) * 0.55
    return _encode(Image.fromarray(small.clip(0, 255).astype(np.uint8)), "JPEG", quality=82)


def mask_thumbnail(mask_path: np.ndarray | Path | str, side: int = defaults.REPORT_CANDIDATE_SIDE) -> str:
    """A candidate mask (white = pattern; ``HxW bool`` or its PNG), longest side ``side``,
    as a PNG data URI."""
    mask = _mask(mask_path)
    h, w = _fit(mask.shape, side)
    return _encode(Image.fromarray(mask).convert("L").resize((w, h), Image.Resampling.BILINEAR))


def photo_thumbnail(photo: Path | str, side: int) -> np.ndarray:
    """The photo (a file or an ``s3://`` object) as ``hxwx3 uint8 RGB``, longest side
    ``side`` (never upscaled), EXIF orientation applied; a JPEG is decoded at the smallest
    DCT scale that keeps both sides at least ``side`` (Pillow's draft mode)."""
    with local_copy(photo) as local:
        image = load_photo(local, min_side=side).image
    h, w = _fit(image.shape[:2], side)
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.LANCZOS))


def reading_picture(thumb: np.ndarray, mask: np.ndarray) -> Image.Image:
    """One reading over a photo: ``thumb`` (``hxwx3 uint8 RGB``) with ``mask`` (``HxW bool``
    at any size, e.g. the method's working size, resized by nearest neighbour) tinted and
    everything else dimmed, so the region read as the pattern stands out."""
    h, w = thumb.shape[:2]
    m = resize_mask(mask, (h, w))
    out = thumb.astype(np.float32)
    out[~m] *= READING_DIM
    out[m] = out[m] * (1 - READING_TINT) + np.array(OVERLAY_RGB, dtype=np.float32) * READING_TINT
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int = 82) -> bytes:
    """``img`` as JPEG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
