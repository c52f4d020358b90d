"""Local paths and ``s3://`` URLs behind one small interface (fsspec; s3fs for S3).

What may live on S3-compatible storage (the scope, kept honest):

- a dataset root for ``gloper run``: it is copied to ``GLOPER_STAGING_DIR``
  (:func:`stage_tree`) and run from there; the job is keyed by the URL;
- a manifest (CSV or Parquet) for ``gloper run``/``gloper submit``: read in place;
- a run's masks: ``gloper run ... --upload-results s3://...`` mirrors the job's
  results folder there when the run ends (:func:`upload_tree`); masks are
  written locally first, and the store keeps the local paths;
- exports and HTML reports: ``--out``/``--html`` may be URLs (:func:`write_bytes`);
- for queue workers that share no filesystem (:mod:`gloper_jobs.remote`): one photo
  streamed per item (:func:`get_file`), one object per mask (:func:`put_file`), a
  listing instead of a scan (:func:`list_files`), and :func:`classify`, which tells
  a throttled or unreachable store (retried) from a denied key or a missing bucket
  (recorded against the item with what to fix).

Credentials, region and endpoint come from the usual AWS variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for a non-AWS server), read by botocore itself.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from gloper_jobs import defaults
from gloper_jobs.exceptions import GloperError, StorageError, StorageUnavailableError

T = TypeVar("T")


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
    tmp = target.with_name(f".partial-{os.getpid()}-{threading.get_ident()}-{target.name}")
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
    when the URL holds no image, a key would leave ``staging_dir`` (``..`` parts), or a
    download fails (keeping the files that arrived whole).
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
    from gloper_jobs.paths import is_inside

    dests = {key: local_root / key[len(root):].lstrip("/") for key in sorted(images)}
    escaping = [key for key, dest in dests.items() if not is_inside(dest, local_root)]
    if escaping:  # before any download: an object named ".." must not write outside the staging folder
        raise StorageError(
            f"{url}: object key(s) {', '.join(escaping[:3])} would leave the staging folder {local_root}; "
            "rename them in the bucket (no '..' parts) or leave them out with --manifest")
    wanted = {key: dest for key, dest in dests.items()
              if not (dest.is_file() and dest.stat().st_size == images[key].get("size"))}
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


# --- single objects, for workers that share no filesystem ---------------------------
# (additive: the tree functions above stay as they are)

#: errno values s3fs gives throttling (SlowDown, 503) and server-side faults once its own retries are used up
_TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET,
                               errno.ECONNREFUSED, getattr(errno, "EREMOTEIO", errno.EIO)})


def join(base: str, rel: str) -> str:
    """``base`` (a URL or a local folder) and a POSIX ``rel`` path joined with one ``/``."""
    return f"{str(base).rstrip('/')}/{rel.lstrip('/')}"


def classify(url: str, exc: BaseException) -> GloperError:
    """The library's error for a failed object operation, with what to fix.

    Throttling, a server fault or an unreachable endpoint is transient
    (:class:`StorageUnavailableError`: the queue retries the item with backoff);
    a missing bucket or object and a denied request are permanent
    (:class:`StorageError`, recorded against the item). Credentials never appear.
    """
    bucket = url.split("://", 1)[-1].split("/", 1)[0]
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermissionError):
        return StorageError(
            f"{url}: access denied ({text}). Give this machine's credentials (AWS_* variables, "
            f"AWS_PROFILE or the instance/pod role) s3:GetObject, s3:PutObject and s3:ListBucket on "
            f"bucket {bucket!r}, then `gloper retry-failed JOB`")
    if isinstance(exc, FileNotFoundError):
        if "bucket" in str(exc).lower():
            return StorageError(f"{url}: the bucket {bucket!r} does not exist ({text}); create it or fix the "
                                "URL (and AWS_ENDPOINT_URL for a non-AWS server), then `gloper retry-failed JOB`")
        return StorageError(f"{url} does not exist; upload it, or fix the URL or manifest row that names it, "
                            "then `gloper retry-failed JOB`")
    transient = isinstance(exc, (ConnectionError, TimeoutError)) or (
        isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS) or any(
        word in str(exc) for word in ("SlowDown", "Throttl", "ServiceUnavailable", "RequestTimeout",
                                      "InternalError", "Could not connect", "Connect timeout"))
    if transient:
        return StorageUnavailableError(f"{url}: object storage is throttling or unreachable ({text}); "
                                       "the item is retried with backoff")
    return _wrap(url, exc if isinstance(exc, Exception) else Exception(str(exc)))


def _call(url: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except GloperError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore/aiohttp raise more than OSError
        raise classify(url, exc) from exc


def get_file(url: str, local: Path) -> Path:
    """Stream one object to ``local`` (written under a temporary name, then renamed)."""
    fs, path = filesystem(url)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".partial-{os.getpid()}-{threading.get_ident()}-{local.name}")
    _call(url, lambda: fs.get_file(path, str(tmp)))
    os.replace(tmp, local)
    return local


def put_file(local: Path, url: str) -> str:
    """Upload one local file as the object ``url`` (a second upload overwrites it); returns ``url``."""
    fs, path = filesystem(url)
    _call(url, lambda: fs.put_file(str(local), path))
    return url


def list_files(url: str) -> list[str]:
    """Every object key under the prefix ``url``, relative to it, sorted (a listing, no download)."""
    fs, root = filesystem(url)
    root = root.rstrip("/")

    def find() -> list[str]:
        fs.invalidate_cache(root)
        return sorted(k[len(root):].lstrip("/") for k in fs.find(root))

    return _call(url, find)


@contextmanager
def local_copy(location: str | Path, scratch: Path | None = None) -> Iterator[Path]:
    """A local path to read ``location`` from: itself when local, else the object streamed to
    a temporary file (in ``scratch``, or the system's temp folder) that is deleted afterwards."""
    if not is_url(location):
        yield Path(location)
        return
    url = str(location)
    with tempfile.TemporaryDirectory(prefix="gloper-obj-", dir=scratch) as tmp:
        yield get_file(url, Path(tmp) / PurePosixPath(url).name)


def exists(url: str) -> bool:
    """Whether the object ``url`` exists (a denied or throttled request raises, classified)."""
    fs, path = filesystem(url)

    def check() -> bool:
        fs.invalidate_cache(path)
        return bool(fs.exists(path))

    return _call(url, check)


def check_bucket(url: str) -> None:
    """Raise :class:`StorageError` naming the fix when the bucket of ``url`` is missing or denied
    (a worker's boot check); :class:`StorageUnavailableError` when the store cannot answer now."""
    fs, path = filesystem(url)
    bucket = path.split("/", 1)[0]

    def probe() -> bool:
        fs.invalidate_cache()  # the bucket list too
        return bool(fs.exists(bucket))

    if not _call(url, probe):
        raise StorageError(f"{url}: the bucket {bucket!r} does not exist or these credentials cannot see it; "
                           "create it, or fix GLOPER_RESULTS_DIR (and AWS_ENDPOINT_URL for a non-AWS server)")
