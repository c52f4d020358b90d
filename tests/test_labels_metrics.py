"""Finding labels in the authors' layouts, binarising them, and the overlap metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.labels import base_key, find_label, load_label
from gloper_jobs.exceptions import DatasetError, LabelError
from gloper_jobs.scoring.metrics import scores, scores_at


def test_examples_every_photo_has_its_label(examples_dir: Path) -> None:
    items = scan_dataset(examples_dir)
    assert len(items) == 10
    assert {i.species for i in items} == {
        "Cat", "Cows", "Giraffe", "Nyala", "Pandas", "SeaStar", "Seal", "Tiger", "Turtle", "Zebra"}
    for it in items:
        assert it.label_path is not None, it.rel_path
        assert it.label_path.parent.name in ("label", "labels")
        assert base_key(it.label_path.name) == base_key(it.path.name)
    seal = next(i for i in items if i.species == "Seal")
    assert seal.path.name == "010_1_bjxsbc.png.jpg" and seal.label_path.name == "010_1_bjxsbc.png"
    cat = next(i for i in items if i.species == "Cat")
    assert cat.path.name == "0009_001.JPG" and cat.label_path.name == "0009_001.jpg"


def test_example_labels_binarise_to_plausible_pattern_shares(examples_dir: Path) -> None:
    for it in scan_dataset(examples_dir):
        lab = load_label(it.label_path)
        assert lab.dtype == bool
        assert 0.01 < lab.mean() < 0.6, (it.rel_path, lab.mean())


def test_layouts_and_missing_label(tmp_path: Path) -> None:
    (tmp_path / "Tiger" / "labels").mkdir(parents=True)
    (tmp_path / "Zebra" / "label").mkdir(parents=True)
    img = Image.new("RGB", (8, 8), "white")
    img.save(tmp_path / "Tiger" / "a.JPG")
    img.save(tmp_path / "Tiger" / "labels" / "a.png")
    img.save(tmp_path / "Zebra" / "b.png.jpg")
    img.save(tmp_path / "Zebra" / "label" / "b.png")
    img.save(tmp_path / "Zebra" / "unlabelled.webp")
    items = {i.rel_path: i for i in scan_dataset(tmp_path)}
    assert set(items) == {"Tiger/a.JPG", "Zebra/b.png.jpg", "Zebra/unlabelled.webp"}
    assert items["Tiger/a.JPG"].label_path.name == "a.png"
    assert items["Zebra/b.png.jpg"].label_path.name == "b.png"
    assert items["Zebra/unlabelled.webp"].label_path is None
    assert find_label(tmp_path / "Zebra" / "b.png.jpg").name == "b.png"


def test_empty_or_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no photos"):
        scan_dataset(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "absent")


def test_binarisation_rgb_jpeg_noise_and_rgba(tmp_path: Path) -> None:
    arr = np.full((10, 10, 3), 255, dtype=np.uint8)
    arr[:5] = 0
    Image.fromarray(arr).save(tmp_path / "rgb.jpg", quality=60)
    lab = load_label(tmp_path / "rgb.jpg")
    assert lab[:4].all() and not lab[6:].any()
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:, :5, 3] = 255  # opaque black on the left, transparent on the right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    lab = load_label(tmp_path / "rgba.png")
    assert lab[:, :5].all() and not lab[:, 5:].any()
    (tmp_path / "broken.png").write_text("no")
    with pytest.raises(LabelError, match="broken.png"):
        load_label(tmp_path / "broken.png")


def test_scores_known_values() -> None:
    label = np.zeros((4, 4), dtype=bool)
    label[:2] = True  # 8 px
    pred = np.zeros((4, 4), dtype=bool)
    pred[1:3] = True  # 8 px, 4 overlap
    s = scores(pred, label)
    assert s.dice == pytest.approx(0.5) and s.iou == pytest.approx(4 / 12)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(0.5)
    assert scores(label, label).dice == 1.0
    assert scores(np.zeros_like(label), label).dice == 0.0
    assert scores(np.zeros_like(label), np.zeros_like(label)).dice == 1.0
    assert scores_at(pred, label, 8).dice == pytest.approx(0.5)
    with pytest.raises(ValueError):
        scores(pred, label[:2])
