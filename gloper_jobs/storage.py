"""Local paths and ``s3://`` URLs behind one small interface (fsspec; s3fs for S3).

What may live on S3-compatible storage (the scope, kept honest):

- a dataset root for ``gloper run``: it is copied to ``GLOPER_STAGING_DIR``
  (:func:`stage_tree`) and run from there; the job is keyed by the URL;
- a manifest (CSV or Parquet) for ``gloper run``/``gloper submit``: read in place;
- a run's masks: ``gloper run ... --upload-results s3://...`` mirrors the job's
  results folder there when the run ends (:func:`upload_tree`); masks are
  written locally first, and the store keeps the local paths;
- exports and HTML reports: ``--out``/``--html`` may be URLs (:func:`write_bytes`).

Credentials, region and endpoint come from the usual AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for a non-AWS server), read by botocore itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gloper_jobs import defaults
from gloper_jobs.exceptions import StorageError


def is_url(location: str | Path) -> bool:
    """True for ``s3://...`` (and the other schemes in ``defaults.URL_SCHEMES``)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return False
    if scheme.lower() not in defaults.URL_SCHEMES:
        raise StorageError(
            f"{text}: unsupported storage scheme {scheme!r}; use a local path or "
            f"{', '.join(s + '://bucket/prefix' for s in defaults.URL_SCHEMES)}"
        )
    return True


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for ``url``; a clear error when s3fs is missing."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except ImportError as exc:
        raise StorageError(
            f"{url}: reading or writing S3 needs the s3 extra: pip install 'gloper-jobs[s3]' ({exc})"
        ) from exc


def _wrap(url: str, exc: Exception) -> StorageError:
    return StorageError(
        f"{url}: {type(exc).__name__}: {exc}. Check the bucket name and the AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY and (for a non-AWS server) AWS_ENDPOINT_URL variables"
    )


def read_bytes(location: str | Path) -> bytes:
    """The whole content of a local file or an object."""
    if not is_url(location):
        return Path(location).read_bytes()
    url = str(location)
    fs, path = filesystem(url)
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError as exc:
        raise StorageError(f"{url} does not exist") from exc
    except OSError as exc:
        raise _wrap(url, exc) from exc


def write_bytes(location: str | Path, data: bytes) -> str:
    """Write ``data`` to a local file (atomically: temp name, then rename) or an object.

    Returns the location written, as given.
    """
    if is_url(location):
        url = str(location)
        fs, path = filesystem(url)
        try:
            fs.pipe_file(path, data)
        except OSError as exc:
            raise _wrap(url, exc) from exc
        return url
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".partial-{os.getpid()}-{target.name}")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return str(target)


def stage_tree(url: str, staging_dir: Path) -> Path:
    """Copy the image files under ``url`` to ``staging_dir/<bucket>/<prefix>``; returns that folder.

    Photos and labels (any of ``defaults.IMAGE_EXTENSIONS``) keep their relative
    paths. A file already staged with the same size is not fetched again, so a
    resumed run only downloads what is new. The rest come in one fsspec ``get``
    (concurrent with s3fs), each to a ``.partial-`` name renamed into place once
    it is whole, so no reader sees half a photo. Raises :class:`StorageError`
    when the URL holds no image or a download fails (keeping the files that
    arrived whole).
    """
    fs, root = filesystem(url)
    root = root.rstrip("/")
    local_root = Path(staging_dir).expanduser() / root
    try:
        fs.invalidate_cache(root)  # another process may have written there since this one listed it
        listing = fs.find(root, detail=True)
    except OSError as exc:
        raise _wrap(url, exc) from exc
    images = {k: v for k, v in listing.items() if k.lower().endswith(defaults.IMAGE_EXTENSIONS)}
    if not images:
        raise StorageError(f"{url}: no images under this prefix (looked for {', '.join(defaults.IMAGE_EXTENSIONS)})")
    wanted: dict[str, Path] = {}
    for key, info in sorted(images.items()):
        dest = local_root / key[len(root):].lstrip("/")
        if not (dest.is_file() and dest.stat().st_size == info.get("size")):
            wanted[key] = dest
    partial = [d.with_name(f".partial-{os.getpid()}-{d.name}") for d in wanted.values()]
    for folder in {t.parent for t in partial}:  # async filesystems make them, the others need not
        folder.mkdir(parents=True, exist_ok=True)
    failure: OSError | None = None
    try:
        fs.get(list(wanted), [str(t) for t in partial])
    except OSError as exc:
        failure = exc
    for (key, dest), tmp in zip(wanted.items(), partial, strict=True):
        # after a failure, what arrived whole is kept, so a retry fetches only the rest
        if failure is None or (tmp.is_file() and tmp.stat().st_size == images[key].get("size")):
            os.replace(tmp, dest)
        else:
            tmp.unlink(missing_ok=True)
    if failure is not None:
        raise _wrap(url, failure) from failure
    return local_root


def upload_tree(local: Path, url: str) -> int:
    """Mirror the files under ``local`` to ``url`` (same relative paths) in one fsspec ``put``;
    returns how many. Files still being written (``.partial-`` names) are left out."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    files = sorted(p for p in Path(local).rglob("*") if p.is_file() and not p.name.startswith(".partial-"))
    try:
        fs.put([str(p) for p in files], [f"{root}/{p.relative_to(local).as_posix()}" for p in files])
    except OSError as exc:
        raise _wrap(url, exc) from exc
    return len(files)
