"""Where a job's photos come from: a folder scan, a manifest, or an ``s3://`` root.

The embedded run stages an ``s3://`` root (:func:`stage`); the queue lists it and
its workers stream one photo per item (:mod:`gloper_jobs.remote`). Every kind that
lists photos calls :func:`list_items`; a manifest is checked there, before
anything is written to the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gloper_jobs.data.datasets import DatasetItem, iter_dataset
from gloper_jobs.manifest import load_manifest
from gloper_jobs.settings import Settings
from gloper_jobs.storage import is_url, stage_tree


def stage(dataset: str | Path, settings: Settings) -> tuple[Path, str | None]:
    """``(local root, origin URL)``: an ``s3://`` prefix is copied to ``settings.staging_dir``
    first (:func:`gloper_jobs.storage.stage_tree`); a local folder is returned as it is."""
    if is_url(dataset):
        return stage_tree(str(dataset), settings.staging_dir), str(dataset)
    return Path(dataset), None


def list_items(root: str | Path, manifest: str | Path | None = None,
               skipped: list[str] | None = None) -> tuple[Iterable[DatasetItem], str | None]:
    """The photos of ``root`` (a lazy folder scan) or those ``manifest`` lists, and the manifest's
    ``source`` (its location and digest, part of the job's key; None for a scan). A scan
    appends the symlinks out of the root it left out to ``skipped``; a manifest's rows that
    leave the root become items that fail with the reason.

    An ``s3://`` root is listed, not downloaded (:mod:`gloper_jobs.remote`): its items are
    keys relative to the prefix, read by the worker that takes each one.

    Raises :class:`~gloper_jobs.exceptions.ManifestError` for a bad manifest.
    """
    if is_url(root):
        from gloper_jobs.remote import list_remote, placeholder_root, remote_manifest_items

        if manifest is None:
            return list_remote(str(root)), None
        remote = load_manifest(manifest, placeholder_root(str(root)))
        return remote_manifest_items(str(root), remote.items), remote.source
    if manifest is None:
        return iter_dataset(Path(root), skipped=skipped), None
    listed = load_manifest(manifest, Path(root))
    return listed.items, listed.source


def source_of(origin: str | None, manifest_source: str | None) -> str | None:
    """``job.source``: the URL the photos were staged from and/or the manifest; None for a plain folder."""
    return "; ".join(p for p in (origin, manifest_source) if p) or None
