"""Resolving a dataset item's path inside its root: the one check every input goes through.

A manifest row, a scanned photo or a label names a file *relative to a dataset root*.
:func:`resolve_inside` turns it into a real path and refuses anything that ends up
outside the root: ``../`` components, an absolute path elsewhere, or a symlink (of
the file or of any folder on the way) that points out. Symlinks that stay inside the
root are followed. The refusal is a :class:`~gloper_jobs.exceptions.PathEscapeError`,
a permanent error: the item fails with its message and the run goes on.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from gloper_jobs.exceptions import PathEscapeError


def is_inside(path: Path | str, root: Path | str) -> bool:
    """Whether ``path``, every symlink on the way resolved, is ``root`` or lies under it."""
    root_real = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real == root_real or real.is_relative_to(root_real)


def resolve_inside(root: Path | str, rel: Path | str) -> Path:
    """The real path of ``rel`` under ``root``; raises :class:`PathEscapeError` if it leaves ``root``.

    ``rel`` is relative to ``root`` (POSIX or native separators); an absolute ``rel``
    is accepted only when it lies inside ``root``. The file need not exist (a missing
    file fails later, when it is read); only where it would be matters. Returns the
    resolved absolute path (symlinks followed).
    """
    root_real = Path(os.path.realpath(root))
    text = str(rel)
    if not text or text.strip() != text:
        raise PathEscapeError(f"{text!r} is not a usable path: empty, or with leading/trailing spaces")
    candidate = Path(text) if Path(text).is_absolute() else Path(root) / PurePosixPath(text.replace("\\", "/"))
    real = Path(os.path.realpath(candidate))
    if not is_inside(real, root_real):
        how = _how_it_escapes(Path(root), text)
        raise PathEscapeError(
            f"{text} resolves to {real}, outside the dataset root {root_real} ({how}); "
            "give paths relative to the root that stay inside it, or choose a root that contains them"
        )
    return real


def _how_it_escapes(root: Path, text: str) -> str:
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return "'..' leads out"
    if Path(text).is_absolute() and not (Path(text).is_relative_to(root) or
                                         Path(text).is_relative_to(os.path.abspath(root))):
        return "an absolute path elsewhere"
    return "a symlink on the way points out"


def item_inputs(root: Path | str, path: str, label_path: str | None) -> tuple[Path, Path | None]:
    """An item's photo and label as stored, each checked by :func:`resolve_inside` against the
    job's dataset ``root`` just before it is read (so a retried item is checked again).

    Stored paths are filesystem paths (absolute, or relative to the working folder when the
    dataset was given as a relative path), not paths relative to ``root``.
    """

    def checked(stored: str) -> Path:
        p = Path(stored)
        return resolve_inside(root, p if p.is_absolute() else Path.cwd() / p)  # keeps '..' for the message

    return checked(path), (checked(label_path) if label_path else None)
