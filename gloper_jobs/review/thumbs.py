"""The review page's pictures, made once and kept on disk.

For each photo shown: the photo itself, read once (a JPEG at the smallest DCT scale
that is enough) and downscaled to ``side`` px, and one picture per candidate mask,
drawn from the candidate's RLE in the store (at the method's working size) over that
downscaled photo (:func:`~gloper_jobs.reporting.figures.reading_picture`). No
full-resolution image is ever sent. Layout under the cache folder::

    <store and job digest>-job<id>/<item id>/photo.jpg
    <store and job digest>-job<id>/<item id>/<candidate>-<RLE digest>.jpg

The digest of the store's URL and the job's key keeps two stores' job 3 apart; the
RLE's digest makes a changed mask a new file. Every file is written to a temporary
name and renamed, so a reader sees a whole picture or none.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from gloper_jobs.data.outputs import TMP_MARK, candidate_mask
from gloper_jobs.jobs.item_files import photo_location
from gloper_jobs.reporting.figures import jpeg_bytes, photo_thumbnail, reading_picture
from gloper_jobs.store.models import Candidate, Item, Job

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LOCKS = 64


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class ThumbCache:
    """Pictures of one job's photos under ``root`` (longest side ``side`` px, JPEG).

    ``rendered`` counts the pictures this cache drew (a request served from disk draws
    none). Thread-safe: one photo is drawn by one thread at a time.
    """

    def __init__(self, root: Path, store_url: str, job: Job, side: int) -> None:
        if job.id is None:
            raise ValueError("job has no id")
        self.job = job
        self.side = side
        self.folder = Path(root).expanduser() / f"{_digest(store_url, job.key, str(side))}-job{job.id}"
        self.rendered = 0
        self._locks = [threading.Lock() for _ in range(_LOCKS)]
        self._count = threading.Lock()

    def _item_folder(self, item: Item) -> Path:
        return self.folder / str(item.id)

    def photo_path(self, item: Item) -> Path:
        """Where the photo's downscaled copy is (or will be)."""
        return self._item_folder(item) / "photo.jpg"

    def reading_path(self, item: Item, cand: Candidate) -> Path:
        """Where candidate ``cand``'s picture over the photo is (or will be)."""
        rle = cand.rle or {}
        key = _digest(str(rle.get("size")), str(rle.get("counts")), cand.mask_path)
        return self._item_folder(item) / f"{_SAFE.sub('_', cand.name)}-{key}.jpg"

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_MARK}{os.getpid()}-{threading.get_ident()}-{path.name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._count:
            self.rendered += 1

    def _thumb(self, item: Item) -> np.ndarray:
        """The photo's downscaled copy (``hxwx3 uint8 RGB``), drawn and kept when missing.
        Call with the item's lock held."""
        path = self.photo_path(item)
        if not path.is_file():
            small = photo_thumbnail(photo_location(self.job, item), self.side)
            self._write(path, jpeg_bytes(Image.fromarray(small), quality=85))
            return small
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))

    def photo(self, item: Item) -> Path:
        """The photo's picture (made now if missing). Raises
        :class:`~gloper_jobs.exceptions.ImageLoadError` for a photo that cannot be read."""
        path = self.photo_path(item)
        if path.is_file():
            return path
        with self._locks[(item.id or 0) % _LOCKS]:
            self._thumb(item)
        return path

    def reading(self, item: Item, cand: Candidate) -> Path:
        """Candidate ``cand`` of ``item`` over the photo (made now if missing): the mask from
        its RLE in the store (its PNG only when it has no RLE), resized to the picture."""
        path = self.reading_path(item, cand)
        if path.is_file():
            return path
        with self._locks[(item.id or 0) % _LOCKS]:
            if path.is_file():  # another request drew it meanwhile
                return path
            thumb = self._thumb(item)
            mask = candidate_mask("" if cand.rle else cand.mask_path, cand.rle)
            self._write(path, jpeg_bytes(reading_picture(thumb, mask), quality=82))
        return path

