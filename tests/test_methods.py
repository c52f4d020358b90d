"""Every registered method, run the same way (timm-style: over list_segmenters())."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gloper_jobs.data.images import load_image
from gloper_jobs.exceptions import InvalidParameterError, UnknownMethodError
from gloper_jobs.methods import SegmentContext, create_segmenter, list_segmenters
from gloper_jobs.methods.registry import REGISTRY, get_segmenter_class
from tests.method_params import fast_params


@pytest.fixture(scope="module")
def photo(examples_dir: Path, foreground) -> tuple[np.ndarray, np.ndarray]:
    img = load_image(next(examples_dir.glob("Zebra/*.jpg")))
    return img, foreground(img).mask


@pytest.mark.parametrize("name", list_segmenters())
def test_method_contract(name: str, photo: tuple[np.ndarray, np.ndarray]) -> None:
    image, fg = photo
    seg = create_segmenter(name, **fast_params(name))
    out = seg.segment(image, fg, SegmentContext(species="Zebra"))
    assert out.candidates and out.choice in out.candidates
    shapes = {m.shape for m in out.candidates.values()}
    assert len(shapes) == 1
    (h, w), = shapes
    for cname, mask in out.candidates.items():
        assert mask.dtype == bool, cname
        from gloper_jobs.data.images import resize_mask

        assert not (mask & ~resize_mask(fg, (h, w))).any(), f"{cname} leaks outside the foreground"
    assert any(m.any() for m in out.candidates.values()), "every candidate is empty"
    full = out.resized(*image.shape[:2])
    assert set(full) == set(out.candidates)
    assert all(m.shape == image.shape[:2] and m.dtype == bool for m in full.values())
    assert set(out.oracle_names()) <= set(out.candidates)
    # deterministic for fixed parameters
    again = create_segmenter(name, **fast_params(name)).segment(image, fg, SegmentContext(species="Zebra"))
    assert set(again.candidates) == set(out.candidates) and again.choice == out.choice
    for cname in out.candidates:
        assert np.array_equal(again.candidates[cname], out.candidates[cname]), cname


@pytest.mark.parametrize("name", list_segmenters())
def test_method_rejects_bad_parameters(name: str) -> None:
    with pytest.raises(InvalidParameterError) as info:
        create_segmenter(name, no_such_parameter=1)
    for field in get_segmenter_class(name).Params.field_names():
        assert field in str(info.value)
    with pytest.raises(InvalidParameterError, match="profile"):
        create_segmenter(name, profile="no-such-profile")


@pytest.mark.parametrize("name", list_segmenters())
def test_method_profiles_build(name: str) -> None:
    cls = REGISTRY[name]
    assert "cpu" in cls.profiles and "paper" in cls.profiles
    for profile in cls.profiles:
        seg = create_segmenter(name, profile=profile)
        assert seg.identity()["method"] == name
    assert cls.device_class in ("cpu", "gpu")


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownMethodError) as info:
        create_segmenter("kmenas")
    for name in list_segmenters():
        assert name in str(info.value)


def test_bad_values_are_explained() -> None:
    with pytest.raises(InvalidParameterError, match="size"):
        create_segmenter("kmeans", size=7)
    with pytest.raises(InvalidParameterError, match="not a valid int"):
        create_segmenter("kmeans", k="two")
    with pytest.raises(InvalidParameterError, match="2\\*64 must divide"):
        create_segmenter("gloper", size=64, local_sizes="64")
    with pytest.raises(InvalidParameterError, match="rho"):
        create_segmenter("gloper", rho=1.5)
    with pytest.raises(InvalidParameterError, match="choice"):
        create_segmenter("gloper", local_sizes="8,16", choice="local_32")
    # CLI strings are coerced to the declared types
    seg = create_segmenter("gloper", size="64", local_sizes="4,8", steps="2", tau="0.2")
    assert seg.params.identity()["local_sizes"] == [4, 8] and seg.params.identity()["tau"] == 0.2
    assert "device" not in seg.params.identity()


def test_cli_strings_are_coerced_and_wrong_types_named() -> None:
    p = create_segmenter("gloper", local_sizes="8 16", chain_sizes="off", size="64").params
    assert p.identity()["local_sizes"] == [8, 16] and p.identity()["chain_sizes"] is False
    assert create_segmenter("gloper", chain_sizes="on").params.identity()["chain_sizes"] is True
    assert create_segmenter("gloper", local_sizes=["8", 16]).params.identity()["local_sizes"] == [8, 16]
    size = create_segmenter("kmeans", size=64.0).params.identity()["size"]
    assert size == 64 and type(size) is int
    with pytest.raises(InvalidParameterError, match=r"parameter size=2\.5 is not a valid int"):
        create_segmenter("kmeans", size=2.5)
    with pytest.raises(InvalidParameterError, match=r"parameter local_sizes='8,x' is not a valid tuple\[int, \.\.\.\] \(item 1"):
        create_segmenter("gloper", local_sizes="8,x")
    with pytest.raises(InvalidParameterError, match="parameter chain_sizes='maybe' is not a valid bool"):
        create_segmenter("gloper", chain_sizes="maybe")
    with pytest.raises(InvalidParameterError, match="parameter tau='fast' is not a valid float"):
        create_segmenter("gloper", tau="fast")
