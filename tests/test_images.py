"""Loading photos in every format and mode an archive holds, and refusing bad files clearly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gloper_jobs.data.images import load_image, resize_mask, resize_rgb
from gloper_jobs.exceptions import ImageLoadError


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full((h, w), 90)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp")])
def test_formats_load_as_rgb_uint8(tmp_path: Path, fmt: str, ext: str) -> None:
    src = _gradient()
    p = tmp_path / f"x.{ext}"
    Image.fromarray(src).save(p, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    out = load_image(p)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    tol = 12 if fmt in ("JPEG", "WEBP") else 0
    assert np.abs(out.astype(int) - src.astype(int)).max() <= tol


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_modes_convert_to_rgb(tmp_path: Path, mode: str) -> None:
    base = Image.fromarray(_gradient())
    if mode == "I;16":
        arr = (np.asarray(base.convert("L")).astype(np.uint16) * 257)
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16")
        fmt, ext = "PNG", "png"
    elif mode in ("I", "F"):
        img = base.convert("L").convert(mode)
        fmt, ext = "TIFF", "tif"
    else:
        img = base.convert(mode)
        fmt, ext = ("TIFF", "tif") if mode == "CMYK" else ("PNG", "png")
    p = tmp_path / f"m.{ext}"
    img.save(p, format=fmt)
    out = load_image(p)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    gray_src = np.asarray(base.convert("L")).astype(int)
    if mode in ("L", "LA", "I;16", "I", "F"):
        # grayscale content survives (16-bit and float are scaled back to 8 bits)
        assert np.abs(out[..., 0].astype(int) - gray_src).max() <= 2
    assert out.std() > 10  # not a blank frame


def test_16bit_rgb_png_loads(tmp_path: Path) -> None:
    import cv2

    arr16 = (_gradient().astype(np.uint16) * 257)[..., ::-1]  # cv2 writes BGR
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), np.ascontiguousarray(arr16))
    out = load_image(p)
    assert out.shape == (24, 32, 3)
    assert np.abs(out.astype(int) - _gradient().astype(int)).max() <= 1


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = _gradient(20, 40)  # landscape pixels
    img = Image.fromarray(src)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW for display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.shape == (40, 20, 3)  # displayed as portrait
    # the top-left displayed pixel is the source's bottom-left
    assert abs(int(out[0, 0, 1]) - int(src[-1, 0, 1])) <= 12


def _expect(path: Path, fragment: str) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


def test_missing_empty_folder_and_non_image(tmp_path: Path) -> None:
    _expect(tmp_path / "nope.jpg", "not found")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _expect(tmp_path / "empty.jpg", "empty file")
    (tmp_path / "dir.jpg").mkdir()
    _expect(tmp_path / "dir.jpg", "folder")
    (tmp_path / "notes.jpg").write_text("field notes, not a photo")
    _expect(tmp_path / "notes.jpg", "not a readable image")


def test_truncated_and_corrupt(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    _expect(tmp_path / "trunc.jpg", "truncated")
    png = io.BytesIO()
    Image.fromarray(_gradient()).save(png, "PNG")
    raw = bytearray(png.getvalue())
    raw[60:80] = b"\x00" * 20  # smash the image data
    (tmp_path / "bad.png").write_bytes(bytes(raw))
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "bad.png")
    assert "bad.png" in str(info.value)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    p = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000)).save(p)  # 9 MPx of zeros, tiny on disk
    _expect_limit = pytest.raises(ImageLoadError)
    with _expect_limit as info:
        load_image(p, max_pixels=1_000_000)
    assert "decompression-bomb" in str(info.value) and "GLOPER_MAX_IMAGE_PIXELS" in str(info.value)
    assert load_image(p, max_pixels=10_000_000).shape == (3000, 3000, 3)


def test_example_photos_all_load(examples_dir: Path) -> None:
    from gloper_jobs.data.datasets import scan_dataset

    for item in scan_dataset(examples_dir):
        arr = load_image(item.path)
        assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8


def test_resize_helpers() -> None:
    img = _gradient()
    out = resize_rgb(img, (16, 8))
    assert out.shape == (16, 8, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    m = np.zeros((4, 4), dtype=bool)
    m[:2] = True
    big = resize_mask(m, (8, 8))
    assert big.dtype == bool and big[:4].all() and not big[4:].any()
