"""Archives and results in object storage, for queue workers that share no filesystem.

A job whose dataset is an ``s3://`` prefix is listed at submission (a listing, no
download): each item's ``rel_path`` is its key under the prefix and its label, if
any, is stored relative to the prefix too. A worker that takes the item streams
that one photo (and label) into a scratch folder of its own
(``GLOPER_STAGING_DIR/items/<pid>``), segments it, and, when the job's results
folder is an ``s3://`` prefix (``GLOPER_RESULTS_DIR=s3://bucket/prefix``), uploads
one object per mask plus ``choice.json`` under ``<results>/<rel_path>/``; the store
keeps each mask's URL (:mod:`gloper_jobs.jobs.item_files` does it around each photo). A re-delivered item writes the same keys again: it
overwrites, never duplicates. The scratch folder is emptied after every item.

Layout rules are the folder scan's (:mod:`gloper_jobs.data.datasets`): species is
the first folder under the prefix, ``label/``/``labels/`` folders hold labels
with the photo's base name, names starting with ``.`` are skipped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import replace
from pathlib import Path, PurePosixPath

from gloper_jobs import defaults
from gloper_jobs.data.datasets import DatasetItem
from gloper_jobs.data.labels import LABEL_DIRNAMES, base_key
from gloper_jobs.exceptions import DatasetError, PathEscapeError
from gloper_jobs.storage import get_file, join, list_files


def _root_name(url: str) -> str:
    return PurePosixPath(url.split("://", 1)[1].rstrip("/")).name


def _is_photo(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(defaults.IMAGE_EXTENSIONS)


def list_remote(url: str) -> list[DatasetItem]:
    """The photos under the prefix ``url`` as items, in ``rel_path`` order (see the module docstring).

    Raises :class:`DatasetError` when the prefix holds no photo.
    """
    keys = list_files(url)
    labels: dict[str, dict[str, str]] = defaultdict(dict)  # folder -> base key -> label rel path
    photos: list[str] = []
    for key in keys:
        parts = PurePosixPath(key).parts
        if any(p.startswith(".") for p in parts):
            continue
        if len(parts) >= 2 and parts[-2].lower() in LABEL_DIRNAMES:
            labels["/".join(parts[:-2])].setdefault(base_key(parts[-1]), key)
        elif not any(p.lower() in LABEL_DIRNAMES for p in parts[:-1]) and _is_photo(parts[-1]):
            photos.append(key)
    if not photos:
        raise DatasetError(f"{url}: no photos under this prefix (looked for {', '.join(defaults.IMAGE_EXTENSIONS)}, "
                           "skipping label/ and labels/ folders); check the URL")
    root_name = _root_name(url)
    items = []
    for rel in sorted(photos):
        parts = PurePosixPath(rel).parts
        label = labels["/".join(parts[:-1])].get(base_key(parts[-1]))
        items.append(DatasetItem(rel, Path(rel), parts[0] if len(parts) > 1 else root_name,
                                 Path(label) if label else None))
    return items


def remote_manifest_items(url: str, items: list[DatasetItem]) -> list[DatasetItem]:
    """A manifest's items (read against a placeholder root) made relative to the prefix ``url``.

    A row's label is its ``label_path`` column, else the labels listed beside the photo.
    """
    folders = {str(PurePosixPath(it.rel_path).parent) for it in items}
    found: dict[str, str] = {}
    if any(it.label_path is None for it in items):
        for key in list_files(url):
            parts = PurePosixPath(key).parts
            if len(parts) >= 2 and parts[-2].lower() in LABEL_DIRNAMES:
                folder = "/".join(parts[:-2]) or "."
                if folder in folders:
                    found.setdefault(f"{folder}/{base_key(parts[-1])}", key)
    out = []
    for it in items:
        rel = PurePosixPath(it.rel_path)
        label: str | None = None
        if it.label_path is not None:
            given = PurePosixPath(it.label_path)
            root = PurePosixPath(placeholder_root(url))
            # an absolute label path stays as written: object_url refuses it when the item runs
            label = given.relative_to(root).as_posix() if given.is_relative_to(root) else given.as_posix()
        else:
            label = found.get(f"{rel.parent}/{base_key(rel.name)}")
        out.append(replace(it, path=Path(it.rel_path), label_path=Path(label) if label else None))
    return out


def placeholder_root(url: str) -> Path:
    """The local-looking root a manifest is read against for the prefix ``url`` (never touched)."""
    return Path("/") / url.split("://", 1)[1].rstrip("/")


def object_url(root: str, rel: str) -> str:
    """``<root>/<rel>``; raises :class:`PathEscapeError` for a ``rel`` that leaves the prefix."""
    text = rel.replace("\\", "/")
    if not text or PurePosixPath(text).is_absolute() or ".." in PurePosixPath(text).parts:
        raise PathEscapeError(f"{rel} leaves the prefix {root} ('..' or an absolute path); "
                              "give paths relative to the prefix that stay inside it")
    return join(root, text)


def scratch_dir(staging_dir: Path) -> Path:
    """This process's scratch folder for one item's photo and masks: ``<staging>/items/<pid>``.

    Made on first use, when the folders of processes that no longer exist (killed
    mid-item, so their files stayed) are deleted.
    """
    import shutil

    folder = Path(staging_dir) / "items" / str(os.getpid())
    if not folder.is_dir():
        for other in folder.parent.glob("*"):
            if other.name.isdigit() and not _alive(int(other.name)):
                shutil.rmtree(other, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# --- dataset-model checkpoints (``gloper train --out s3://...``, ``--param model=s3://...``) ---

def cached_checkpoint(url: str, cache_dir: Path) -> Path:
    """A local copy of the checkpoint object ``url``, cached by its checksum (the object's ETag
    and size) in ``<cache_dir>/models``: a worker downloads each version of a model once.

    Raises :class:`~gloper_jobs.exceptions.StorageError` (missing, denied) or
    :class:`~gloper_jobs.exceptions.StorageUnavailableError` (throttled, unreachable).
    """
    import hashlib

    from gloper_jobs.storage import classify, filesystem

    fs, path = filesystem(url)
    try:
        fs.invalidate_cache(path)
        info = fs.info(path)
    except Exception as exc:  # noqa: BLE001 - botocore raises more than OSError
        raise classify(url, exc) from exc
    tag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    key = hashlib.sha256(f"{url}\n{tag}\n{info.get('size')}".encode()).hexdigest()[:32]
    local = Path(cache_dir) / "models" / f"{key}{PurePosixPath(url).suffix or '.pt'}"
    if local.is_file() and local.stat().st_size == info.get("size"):
        return local
    return get_file(url, local)


def checkpoint_workfile(url: str, staging_dir: Path) -> Path:
    """Where training to the object ``url`` keeps its checkpoint locally (resumed from ``url`` if
    the object exists and no local copy does)."""
    import hashlib

    from gloper_jobs.storage import exists

    local = Path(staging_dir) / "checkpoints" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.pt"
    if not local.is_file() and exists(url):
        get_file(url, local)
    return local
