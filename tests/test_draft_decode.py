"""Decoding only what a method needs: JPEG DCT scaling and whole-factor reduction to the
working size, the full size and EXIF orientation from the header, masks still at full size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gloper_jobs.data.images import load_image, load_photo, resize_rgb
from gloper_jobs.data.outputs import read_mask
from gloper_jobs.exceptions import ImageLoadError
from gloper_jobs.jobs.pipeline import process_photo, working_side
from gloper_jobs.methods.base import MethodParams, Segmentation, Segmenter
from gloper_jobs.methods.registry import create_segmenter


def _photo(h: int, w: int) -> np.ndarray:
    """A smooth ``HxWx3 uint8`` scene with a few blobs (what JPEG and a resize keep well)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(xx / w * 6) * np.cos(yy / h * 4)
    g = 255 * xx / w
    b = np.where((xx - w / 3) ** 2 + (yy - h / 2) ** 2 < (h / 5) ** 2, 220, 40)
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, orientation: int | None = None) -> Path:
    img = Image.fromarray(arr)
    kwargs: dict[str, object] = {"quality": 92} if path.suffix == ".jpg" else {}
    if orientation is not None:
        exif = img.getexif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(path, **kwargs)
    return path


@pytest.mark.parametrize("ext,orientation", [(".jpg", None), (".jpg", 6), (".png", None), (".png", 8)])
def test_working_size_keeps_full_size_orientation_and_pixels(tmp_path: Path, ext: str, orientation: int | None) -> None:
    p = _save(tmp_path / f"big{ext}", _photo(1500, 2000), orientation)
    full = load_image(p)
    photo = load_photo(p, min_side=320)
    assert (photo.height, photo.width) == full.shape[:2]  # the displayed full size, from the header
    assert photo.image.shape[2] == 3 and photo.image.dtype == np.uint8
    h, w = photo.image.shape[:2]
    assert min(h, w) >= 320 and h * w * 4 <= full.shape[0] * full.shape[1]  # 4x fewer pixels at least
    # the same orientation: portrait stays portrait, and the aspect ratio is kept
    assert (h > w) == (full.shape[0] > full.shape[1])
    assert abs(h / w - full.shape[0] / full.shape[1]) < 0.01
    # what the network and the foreground see is near-identical
    a, b = resize_rgb(photo.image, (256, 256)), resize_rgb(full, (256, 256))
    assert float(np.abs(a - b).mean()) < 1.5 / 255 and float(np.abs(a - b).max()) < 40 / 255


def test_small_photos_and_no_working_size_decode_fully(tmp_path: Path) -> None:
    p = _save(tmp_path / "small.jpg", _photo(300, 400))
    assert np.array_equal(load_photo(p, min_side=320).image, load_image(p))
    big = _save(tmp_path / "big.jpg", _photo(1500, 2000))
    assert np.array_equal(load_photo(big).image, load_image(big))


def test_bad_files_fail_the_same_with_a_working_size(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_photo(tmp_path / "trunc.jpg", min_side=320)
    bomb = tmp_path / "bomb.jpg"
    Image.new("L", (3000, 3000)).save(bomb)
    with pytest.raises(ImageLoadError, match="decompression-bomb"):
        load_photo(bomb, max_pixels=1_000_000, min_side=320)


class _SizedParams(MethodParams):
    pass


class _Sized(Segmenter):
    """Records the image it was given; its one candidate is the left half of the frame."""

    name = "sized-test"
    Params = _SizedParams

    def __init__(self, side: int | None) -> None:
        super().__init__(_SizedParams())
        self.side = side
        self.seen: tuple[int, ...] = ()

    def input_side(self) -> int | None:
        return self.side

    def segment(self, image: np.ndarray, foreground: np.ndarray, context: object = None) -> Segmentation:
        self.seen = image.shape
        mask = np.zeros((64, 64), dtype=bool)
        mask[:, :32] = True
        return Segmentation({"left": mask}, "left")


def test_pipeline_decodes_at_the_working_size_and_writes_full_size(tmp_path: Path) -> None:
    p = _save(tmp_path / "big.jpg", _photo(1500, 2000), orientation=6)  # displayed 1500 wide, 2000 high
    seg = _Sized(200)
    out = process_photo(p, seg, tmp_path / "out", None)
    assert (out.width, out.height) == (1500, 2000)
    assert max(seg.seen[:2]) < 2000 and min(seg.seen[:2]) >= 400  # decoded at >= 2 x 200, not fully
    mask = read_mask(tmp_path / "out" / "left.png")
    assert mask.shape == (2000, 1500) and mask[:, :700].all() and not mask[:, 800:].any()
    full = _Sized(200)
    assert process_photo(p, full, tmp_path / "full", None, decode="full").width == 1500
    assert full.seen[:2] == (2000, 1500)


def test_working_side_asks_every_consumer() -> None:
    class Fg:
        input_side = 320

    assert working_side(_Sized(None), None) is None  # a method that needs the full photo
    assert working_side(_Sized(256), None) == 512
    assert working_side(_Sized(256), Fg()) == 640  # type: ignore[arg-type]
    assert working_side(_Sized(256), lambda img: img) is None  # type: ignore[arg-type, return-value]
    # per-photo GloPER keeps the full photo (its results are pinned); the dataset model does not
    assert create_segmenter("gloper").input_side() is None


def test_settings_refuse_unknown_modes() -> None:
    from gloper_jobs.exceptions import ConfigurationError
    from gloper_jobs.settings import Settings

    assert Settings.from_env(decode="full", write_candidates="all").write_candidates == "all"
    with pytest.raises(ConfigurationError, match="GLOPER_DECODE.*use one of working, full"):
        Settings.from_env(decode="fast")
    with pytest.raises(ConfigurationError, match="GLOPER_WRITE_CANDIDATES.*use one of choice, all"):
        Settings.from_env(write_candidates="some")
