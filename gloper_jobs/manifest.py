"""Manifests: a table that lists a run's photos instead of scanning a folder.

A manifest is a CSV or Parquet file (local or ``s3://``) with one row per photo:

==============  ==============================================================
column          meaning
==============  ==============================================================
``path``        the photo, relative to the dataset root (required)
``species``     optional; else the first folder of ``path`` (as a folder scan)
``identity``    optional: the individual animal (re-identification catalogues)
``label_path``  optional: the pattern label, relative to the root; else the
                ``label/`` folder beside the photo is searched as in a scan
``image_id``    optional: the catalogue's own id of the photo
``polarity``    optional: ``darker`` or ``lighter``, which colour is the pattern
                for the row's species (overrides the species' vote; one value
                per species; empty rows leave it to the vote)
==============  ==============================================================

Other columns are ignored, so a `wildlife-datasets` metadata table
(``image_id``, ``identity``, ``path``, ``species``, ``bbox``, ``segmentation``...)
saved with ``df.to_csv``/``df.to_parquet`` is taken as it is.

The table is checked before anything is written: a missing ``path`` column, an
empty table, an empty path or a path listed twice raises :class:`ManifestError`.
Paths are NOT resolved here: a row whose path leaves the root (``../``, an
absolute path elsewhere, a symlink out) becomes an item that fails when it is
processed, with :func:`gloper_jobs.paths.resolve_inside`'s message.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gloper_jobs.data.datasets import DatasetItem
from gloper_jobs.data.labels import find_label
from gloper_jobs.exceptions import ManifestError, PathEscapeError
from gloper_jobs.paths import resolve_inside
from gloper_jobs.storage import read_bytes

REQUIRED_COLUMNS = ("path",)
OPTIONAL_COLUMNS = ("species", "identity", "label_path", "image_id", "polarity")
POLARITY_VALUES = ("darker", "lighter")


@dataclass(frozen=True)
class Manifest:
    """The items a manifest lists, and ``source``: its location and content digest (the job's key)."""

    items: list[DatasetItem]
    source: str


def read_table(location: str | Path) -> Any:
    """The manifest as a pandas DataFrame (``.csv`` or ``.parquet``/``.pq``), all text columns."""
    import pandas as pd

    name = str(location).lower()
    data = read_bytes(location)
    try:
        if name.endswith((".parquet", ".pq")):
            table = pd.read_parquet(io.BytesIO(data))
        elif name.endswith(".csv"):
            table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        else:
            raise ManifestError(f"manifest {location}: use a .csv or .parquet file")
    except (ValueError, OSError) as exc:  # pandas' parser errors derive from ValueError
        raise ManifestError(f"manifest {location} cannot be read: {exc}") from exc
    return table


def _text(value: Any) -> str | None:
    """A cell as text; empty, NaN and None are None (an int id becomes ``'12'``)."""
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except (TypeError, ValueError):  # arrays (wildlife-datasets bbox/segmentation)
        return None
    text = str(value).strip()
    return text or None


def normalise_path(root: Path, raw: str) -> str:
    """The item's ``rel_path``: POSIX, ``a/./b`` and ``a/x/../b`` collapsed; an absolute path
    inside ``root`` made relative. A path that leaves the root stays as written (``../x.jpg``)."""
    text = raw.replace("\\", "/")
    if PurePosixPath(text).is_absolute():
        resolved_root = Path(root).resolve()
        try:
            return Path(posixpath.normpath(text)).relative_to(resolved_root).as_posix()
        except ValueError:
            return posixpath.normpath(text)
    return posixpath.normpath(text)


def manifest_items(table: Any, root: Path, where: str = "manifest") -> list[DatasetItem]:
    """Check ``table`` (a DataFrame) and turn its rows into items under ``root``.

    Raises :class:`ManifestError` naming the problem and the columns found.
    """
    columns = [str(c) for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"{where} has no {', '.join(missing)!s} column (columns: {', '.join(columns) or 'none'}); "
            f"it needs 'path' (relative to the dataset root) and may have {', '.join(OPTIONAL_COLUMNS)}"
        )
    if len(table) == 0:
        raise ManifestError(f"{where} has no rows")
    root = Path(root)
    root_name = root.resolve().name
    items: list[DatasetItem] = []
    seen: dict[str, int] = {}
    records = table.to_dict("records")
    for row_no, row in enumerate(records, start=2 if where.lower().endswith(".csv") else 1):
        raw = _text(row.get("path"))
        if raw is None:
            raise ManifestError(f"{where}, row {row_no}: empty path")
        rel = normalise_path(root, raw)
        if rel in seen:
            raise ManifestError(
                f"{where}, rows {seen[rel]} and {row_no}: the photo {rel} is listed twice; keep one row per photo")
        seen[rel] = row_no
        path = Path(rel) if PurePosixPath(rel).is_absolute() else root / rel
        label_rel = _text(row.get("label_path"))
        label = root / label_rel if label_rel else _find_label(root, rel)
        parts = PurePosixPath(rel).parts
        species = _text(row.get("species")) or (parts[0] if len(parts) > 1 and parts[0] != ".." else root_name)
        polarity = _text(row.get("polarity"))
        if polarity is not None and polarity not in POLARITY_VALUES:
            raise ManifestError(f"{where}, row {row_no}: polarity {polarity!r}: use darker or lighter (or leave it empty)")
        items.append(DatasetItem(rel, path, species, label, _text(row.get("identity")), _text(row.get("image_id")),
                                 polarity))
    return items


def species_polarity(items: list[DatasetItem], where: str = "manifest") -> dict[str, str]:
    """Species -> the polarity its rows name (``polarity`` column); raises
    :class:`ManifestError` when one species' rows name both."""
    out: dict[str, str] = {}
    for it in items:
        if it.polarity is None:
            continue
        if out.setdefault(it.species, it.polarity) != it.polarity:
            raise ManifestError(f"{where}: species {it.species} has rows with polarity darker and lighter; "
                                "give each species one value")
    return out


def _find_label(root: Path, rel: str) -> Path | None:
    """The label beside a photo that stays inside the root (an escaping one is not searched)."""
    try:
        return find_label(resolve_inside(root, rel))
    except PathEscapeError:
        return None


def load_manifest(location: str | Path, root: Path) -> Manifest:
    """Read and check the manifest at ``location`` (local or URL) for the dataset ``root``."""
    table = read_table(location)
    items = manifest_items(table, root, str(location))
    digest = hashlib.sha256("\n".join(
        f"{i.rel_path}\t{i.species}\t{i.identity}\t{i.image_id}\t{i.label_path}" for i in items
    ).encode()).hexdigest()[:16]
    return Manifest(items, f"manifest {location} (sha256 {digest})")
