"""File checksums: the MD5 published for foreground weights, the SHA-256 the store records for a model."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_hexdigest(path: Path | str, algorithm: str) -> str:
    """Hex digest of the file at ``path`` by ``algorithm`` (a :mod:`hashlib` name: ``"sha256"``, ``"md5"``).

    Read by :func:`hashlib.file_digest`, so a large checkpoint never sits in memory whole.
    """
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()
