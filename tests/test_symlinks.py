"""Symlinks in a dataset: followed inside the root, skipped and reported when they lead out,
no loop (issue 12, defect 7). The per-item check at read time is gloper_jobs.paths'."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from gloper_jobs.data.datasets import iter_dataset


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


def test_scan_follows_links_inside_the_root_and_reports_those_leading_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    _photo(root / "Zebra" / "a.jpg")
    _photo(outside / "secret.jpg")
    _photo(outside / "more" / "b.jpg")
    os.symlink(outside / "secret.jpg", root / "Zebra" / "leak.jpg")  # a photo leading out
    os.symlink(outside / "more", root / "Extern")  # a folder leading out
    os.symlink(root / "Zebra", root / "Horse")  # a folder staying inside: followed
    os.symlink(root, root / "Zebra" / "loop")  # back to the root: a loop, not walked
    skipped: list[str] = []
    found = [it.rel_path for it in iter_dataset(root, skipped=skipped)]
    assert found == ["Horse/a.jpg", "Zebra/a.jpg"]
    assert len(skipped) == 5, skipped  # Extern, and the leak and the loop, each seen as Horse/ and Zebra/
    assert any(s.startswith("Zebra/loop/: a symlink to") and "(a loop)" in s for s in skipped)
    assert any(s.startswith("Extern/: a symlink to") and "outside the dataset root" in s for s in skipped)
    assert any(s.startswith("Zebra/leak.jpg: a symlink to") for s in skipped)


def test_an_unreadable_photo_is_reported_as_permission_denied_not_corrupt(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from gloper_jobs.data import images
    from gloper_jobs.exceptions import ImageLoadError

    photo = _photo(tmp_path / "a.jpg")

    def denied(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "Permission denied", str(photo))  # what open() raises for a non-root user

    monkeypatch.setattr(images.Image, "open", denied)
    with pytest.raises(ImageLoadError, match="permission denied") as err:
        images.load_image(photo)
    assert "corrupt" not in str(err.value)
