"""Scanning a folder tree of photos into items, with species and labels.

Species is the first folder under the dataset root (``Zebra/x.jpg`` -> Zebra),
or the root's own name for photos directly in it. ``label``/``labels`` folders
are not photos. Items come out sorted by relative path, so a scan is
deterministic and can be resumed.

Symlinks: a linked folder is followed when it resolves inside the root (a link to
a folder above it, a loop, is not) and skipped, and reported, when it leads out; a linked photo leading out is skipped and reported
too (the worker checks every input again before reading it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gloper_jobs import defaults
from gloper_jobs.data.labels import LABEL_DIRNAMES, base_key, index_label_dir
from gloper_jobs.exceptions import DatasetError
from gloper_jobs.paths import is_inside


@dataclass(frozen=True)
class DatasetItem:
    """One photo of a dataset: where it is, its species, and its label if any."""

    rel_path: str  # POSIX path relative to the dataset root: the item's identity
    path: Path
    species: str
    label_path: Path | None
    identity: str | None = None  # the individual animal, when a manifest names it
    image_id: str | None = None  # the manifest's own id of the photo
    polarity: str | None = None  # a manifest's ``polarity`` column: darker/lighter for its species


def _is_photo(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(defaults.IMAGE_EXTENSIONS)


def iter_dataset(root: Path, with_labels: bool = True, skipped: list[str] | None = None) -> Iterator[DatasetItem]:
    """Yield the photos under ``root`` in sorted order (see module docstring).

    ``skipped`` (if given) receives one line per symlinked folder or photo that
    leads outside the root and was therefore not scanned.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    root_real = Path(os.path.realpath(root))
    root_name = root.resolve().name
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        folder = Path(dirpath)
        here = Path(os.path.realpath(folder))
        keep = []
        for d in sorted(dirnames):
            if d.lower() in LABEL_DIRNAMES or d.startswith("."):
                continue
            link = folder / d
            if link.is_symlink():
                target = Path(os.path.realpath(link))
                why = ("outside the dataset root" if not is_inside(link, root_real)
                       else "a folder above it (a loop)" if here.is_relative_to(target) else None)
                if why is not None:
                    if skipped is not None:
                        skipped.append(f"{link.relative_to(root).as_posix()}/: a symlink to {target}, {why}")
                    continue
            keep.append(d)
        dirnames[:] = keep
        photos = []
        for f in sorted(f for f in filenames if _is_photo(f)):
            if (folder / f).is_symlink() and not is_inside(folder / f, root_real):
                if skipped is not None:
                    skipped.append(f"{(folder / f).relative_to(root).as_posix()}: a symlink to "
                                   f"{os.path.realpath(folder / f)}, outside the dataset root")
                continue
            photos.append(f)
        if not photos:
            continue
        labels = index_label_dir(folder) if with_labels else {}
        for name in photos:
            path = folder / name
            rel = path.relative_to(root)
            species = rel.parts[0] if len(rel.parts) > 1 else root_name
            yield DatasetItem(rel.as_posix(), path, species, labels.get(base_key(name)))


def scan_dataset(root: Path, with_labels: bool = True) -> list[DatasetItem]:
    """All photos under ``root``; raises :class:`DatasetError` if there are none."""
    items = list(iter_dataset(root, with_labels))
    if not items:
        raise DatasetError(
            f"no photos under {root} (looked for {', '.join(defaults.IMAGE_EXTENSIONS)}, "
            "skipping label/ and labels/ folders)"
        )
    return items
