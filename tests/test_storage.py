"""Staging and mirroring trees through fsspec, with a local folder standing in for the object
store (tests/test_s3.py runs the same functions against a local moto S3 server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem

from gloper_jobs import storage
from gloper_jobs.exceptions import StorageError


class FlakyDisk(LocalFileSystem):
    """Local files, except that copying a ``*bad*`` one fails as a dropped connection would."""

    def get_file(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> None:
        if "bad" in path1:
            raise ConnectionResetError(f"connection reset while reading {path1}")
        super().get_file(path1, path2, *args, **kwargs)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DirFileSystem:
    """Objects as files under a folder, keyed ``bucket/prefix/...`` as on S3."""
    (tmp_path / "objects").mkdir()
    fs = DirFileSystem(path=str(tmp_path / "objects"), fs=FlakyDisk(auto_mkdir=True))
    monkeypatch.setattr(storage, "filesystem", lambda url: (fs, url.removeprefix("s3://")))
    return fs


def test_stage_tree_fetches_images_once_and_upload_tree_mirrors(store: DirFileSystem, tmp_path: Path) -> None:
    store.pipe({"b/p/Zebra/a.jpg": b"aa", "b/p/Zebra/label/a.png": b"lab", "b/p/notes.txt": b"no"})
    root = storage.stage_tree("s3://b/p", tmp_path / "staged")
    assert root == tmp_path / "staged" / "b" / "p"
    got = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert got == ["Zebra/a.jpg", "Zebra/label/a.png"] and (root / "Zebra/a.jpg").read_bytes() == b"aa"
    # a second staging fetches only what changed size
    mtime = (root / "Zebra/label/a.png").stat().st_mtime_ns
    store.pipe_file("b/p/Zebra/a.jpg", b"aaaa")
    storage.stage_tree("s3://b/p/", tmp_path / "staged")
    assert (root / "Zebra/a.jpg").read_bytes() == b"aaaa"
    assert (root / "Zebra/label/a.png").stat().st_mtime_ns == mtime

    (root / "Zebra" / ".partial-1-b.jpg").write_bytes(b"half")  # a writer's unfinished file
    assert storage.upload_tree(root, "s3://out/run/") == 2
    assert sorted(store.find("out")) == ["out/run/Zebra/a.jpg", "out/run/Zebra/label/a.png"]
    assert store.cat_file("out/run/Zebra/label/a.png") == b"lab"


def test_a_failed_download_names_the_url_and_keeps_only_whole_files(store: DirFileSystem, tmp_path: Path) -> None:
    store.pipe({"b/p/good.jpg": b"g", "b/p/sub/bad.jpg": b"b"})
    with pytest.raises(StorageError, match=r"s3://b/p: ConnectionResetError: .*sub/bad\.jpg"):
        storage.stage_tree("s3://b/p", tmp_path / "staged")
    staged = sorted(p.relative_to(tmp_path / "staged").as_posix() for p in (tmp_path / "staged").rglob("*") if p.is_file())
    assert staged == ["b/p/good.jpg"]
    with pytest.raises(StorageError, match="no images under this prefix"):
        storage.stage_tree("s3://b/empty", tmp_path / "staged")


def test_a_key_that_leaves_the_staging_folder_is_refused_before_any_download(
        store: DirFileSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 keys may hold '..' parts: staged as they are, one would write outside the folder."""
    store.pipe({"b/p/Zebra/a.jpg": b"aa"})
    real_find = store.find

    def find(path: str, **kwargs: Any) -> Any:
        found = real_find(path, **kwargs)
        found["b/p/../../../escaped.jpg"] = {"name": "b/p/../../../escaped.jpg", "size": 2, "type": "file"}
        return found

    monkeypatch.setattr(store, "find", find)
    with pytest.raises(StorageError, match=r"b/p/\.\./\.\./\.\./escaped\.jpg would leave the staging folder"):
        storage.stage_tree("s3://b/p", tmp_path / "staged" / "here")
    assert not any(p.is_file() for p in tmp_path.rglob("*") if "objects" not in p.parts)  # nothing fetched
