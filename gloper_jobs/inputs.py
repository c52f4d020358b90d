"""Where a job's photos come from: a folder scan, a manifest, or an ``s3://`` root.

:func:`resolve_inputs` is what ``gloper run`` and ``gloper submit`` call before
recording a job; the manifest is checked here, before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gloper_jobs.datasets import DatasetItem, iter_dataset, scan_dataset
from gloper_jobs.exceptions import DatasetError, StorageError
from gloper_jobs.manifest import load_manifest
from gloper_jobs.settings import Settings
from gloper_jobs.storage import is_url, stage_tree


@dataclass
class Inputs:
    """A dataset's local ``root``, its ``items`` and ``source`` (manifest/URL, part of the job's key)."""

    root: Path
    items: Iterable[DatasetItem]
    source: str | None = None


def resolve_inputs(dataset: str | Path, settings: Settings, manifest: str | Path | None = None,
                   lazy: bool = False, allow_url: bool = True) -> Inputs:
    """The items of ``dataset`` (a folder or an ``s3://`` prefix), listed by ``manifest`` when given.

    An ``s3://`` root is first copied to ``settings.staging_dir``; ``allow_url=False``
    (``gloper submit``, whose workers need a shared filesystem) refuses it. ``lazy``
    scans a folder as an iterator (millions of photos). Raises :class:`DatasetError`,
    :class:`ManifestError` or :class:`StorageError`.
    """
    sources: list[str] = []
    if is_url(dataset):
        if not allow_url:
            raise StorageError(
                f"{dataset}: the queue's workers read photos from a filesystem they share; copy the "
                "photos there (or run them here with `gloper run`, which stages s3:// roots)")
        root = stage_tree(str(dataset), settings.staging_dir)
        sources.append(str(dataset))
    else:
        root = Path(dataset)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    items: Iterable[DatasetItem]
    if manifest is not None:
        listed = load_manifest(manifest, root)
        items = listed.items
        sources.append(listed.source)
    else:
        items = iter_dataset(root) if lazy else scan_dataset(root)
    return Inputs(root, items, "; ".join(sources) or None)
