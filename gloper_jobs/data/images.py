"""Reading photos the way a wildlife archive holds them, and resizing arrays.

Every loader returns ``HxWx3 uint8 RGB`` (row 0 at the top, as displayed once
EXIF orientation is applied). Every failure is an :class:`ImageLoadError`
naming the file and the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gloper_jobs import defaults
from gloper_jobs.exceptions import ImageLoadError

# Pillow's own limit only warns below 2x; we check the size ourselves before decoding.
Image.MAX_IMAGE_PIXELS = None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha dropped, 16-bit scaled down)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        arr = np.nan_to_num(arr)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16") or (0 <= lo and 255 < hi <= 65535):
            scale = 65535.0  # 16-bit data
        elif mode == "F" and 0 <= lo and hi <= 1.0:
            scale = 1.0  # float image in [0, 1]
        elif 0 <= lo and hi <= 255:
            scale = 255.0  # 8-bit data stored wide
        else:  # anything else: stretch what is there
            arr = arr - lo
            scale = hi - lo if hi > lo else 1.0
        gray = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    # 1, L, LA, P, PA, RGBA, CMYK, YCbCr, LAB, HSV: Pillow converts (alpha dropped);
    # a mode it cannot convert raises ValueError, reported by load_image.
    return img.convert("RGB")


@dataclass(frozen=True)
class Photo:
    """A decoded photo: ``image`` is ``hxwx3 uint8 RGB`` at the working size, ``width`` x
    ``height`` the photo's full size as displayed (EXIF orientation applied), the size its
    full-resolution masks are written at. ``image`` is the full photo unless a working
    side was asked for."""

    image: np.ndarray
    width: int
    height: int


#: EXIF orientations that swap width and height (rotated by 90 or 270 degrees)
_TRANSPOSING = (5, 6, 7, 8)


def load_image(path: str | Path, max_pixels: int = defaults.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read a photo as ``HxWx3 uint8 RGB``, EXIF orientation applied.

    Accepts JPEG, PNG, WebP, TIFF and BMP in modes 1, L, LA, P, RGB, RGBA, CMYK
    and 16-bit. Raises :class:`ImageLoadError` for a missing, empty, corrupt,
    truncated, non-image or oversized (more than ``max_pixels``) file.
    """
    return load_photo(path, max_pixels).image


def load_photo(path: str | Path, max_pixels: int = defaults.MAX_IMAGE_PIXELS,
               min_side: int | None = None) -> Photo:
    """Read a photo as :func:`load_image` does, decoding only what ``min_side`` needs.

    With ``min_side``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
    keeps both sides at least ``min_side`` (Pillow's draft mode: a 12 MP photo decodes
    at 1/4 or 1/8 of the work), and any larger image is box-reduced by a whole factor
    that keeps both sides at least ``min_side``. The full size is read from the header.
    Raises :class:`ImageLoadError` as :func:`load_image` does.
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file not found")
    if p.is_dir():
        raise ImageLoadError(p, "is a folder, not an image file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ImageLoadError(p, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise ImageLoadError(p, "empty file (0 bytes); re-copy it from the source")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise ImageLoadError(p, f"image has no pixels ({width}x{height})")
                if width * height > max_pixels:
                    raise ImageLoadError(
                        p,
                        f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,} (decompression-bomb guard); downscale it or raise "
                        "GLOPER_MAX_IMAGE_PIXELS",
                    )
                orientation = img.getexif().get(0x0112)
                full = (height, width) if orientation in _TRANSPOSING else (width, height)
                if min_side and img.format == "JPEG":
                    img.draft(img.mode, (min_side, min_side))
                img.load()
                img = ImageOps.exif_transpose(img)  # type: ignore[assignment]
                rgb = _to_rgb(img)
                if min_side and min(rgb.size) // min_side >= 2:
                    rgb = rgb.reduce(min(rgb.size) // min_side)
                arr = np.asarray(rgb, dtype=np.uint8).copy()
    except ImageLoadError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            p, "not a readable image (unknown format or corrupt header); supported: "
            + ", ".join(defaults.IMAGE_EXTENSIONS)
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(p, f"decompression bomb refused: {exc}") from exc
    except PermissionError as exc:  # an OSError, but the file is not corrupt
        raise ImageLoadError(p, "permission denied: the worker's user cannot read this file; fix its "
                                "permissions (e.g. chmod a+r) and retry the item") from exc
    except (OSError, SyntaxError, ValueError, TypeError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            msg = f"file is truncated ({msg}); the copy is incomplete, re-copy it from the source"
        else:
            msg = f"corrupt or unsupported image data: {msg}"
        raise ImageLoadError(p, msg) from exc
    except MemoryError as exc:
        raise ImageLoadError(p, "not enough memory to decode this image; downscale it") from exc
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageLoadError(p, f"decoded to an unexpected shape {arr.shape}")
    return Photo(arr, *full)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``HxWx3 uint8`` to ``size=(height, width)``; returns ``float32`` in [0, 1].

    Bilinear (Pillow, antialiased when shrinking); the aspect ratio is not kept.
    """
    h, w = size
    pil = Image.fromarray(image, mode="RGB").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.float32) / 255.0


def resize_rgb_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Like :func:`resize_rgb` but returns ``HxWx3 uint8`` (for OpenCV baselines)."""
    h, w = size
    return np.asarray(Image.fromarray(image, mode="RGB").resize((w, h), Image.Resampling.BILINEAR))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``HxW bool`` mask to ``size=(height, width)`` by nearest neighbour."""
    h, w = size
    if mask.shape == (h, w):
        return mask.astype(bool, copy=True)
    pil = Image.fromarray(mask.astype(np.uint8) * 255, mode="L").resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(pil) > 127
