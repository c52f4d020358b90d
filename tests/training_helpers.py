"""Training photos held in memory, for tests that train small dataset models on a few photos
(``gloper train`` itself prepares photos as its steps draw them: ``LazyPhotos``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gloper_jobs.data.images import load_image
from gloper_jobs.exceptions import DatasetError, GloperError
from gloper_jobs.methods.gloper.dataset_model.train import ForegroundFn, prepared_photo


@dataclass
class PhotoSet:
    """Training photos at the model's size: ``images`` ``Nx3xSxS uint8`` RGB, ``foreground``
    ``NxSxS bool`` (True = animal); ``skipped`` lists ``(path, reason)`` of unreadable photos."""

    images: torch.Tensor
    foreground: torch.Tensor
    paths: list[str]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def take(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos ``idx``: ``Bx3xSxS uint8`` and ``BxSxS bool``."""
        return self.images[list(idx)], self.foreground[list(idx)]


def prepare_photos(paths: Sequence[Path], size: int, foreground_fn: ForegroundFn | None,
                   max_pixels: int | None = None, progress: bool = False) -> PhotoSet:
    """Load, mask and resize every photo to ``size x size`` (aspect not kept, as GloPER does).

    ``foreground_fn`` gives the animal mask (None: the whole frame). A photo that cannot be
    read is skipped and listed; :class:`DatasetError` when none is left.
    """
    from tqdm import tqdm

    images, masks, kept, skipped = [], [], [], []
    for path in tqdm(paths, desc="preparing photos", unit="photo", disable=not progress, dynamic_ncols=True):
        try:
            image = load_image(path, max_pixels) if max_pixels else load_image(path)
        except GloperError as exc:
            skipped.append((str(path), str(exc)))
            continue
        img, fg = prepared_photo(image, size, foreground_fn)
        images.append(img)
        masks.append(fg)
        kept.append(str(path))
    if not images:
        raise DatasetError(f"none of the {len(paths)} photos could be read: {skipped[:3]}")
    return PhotoSet(torch.stack(images), torch.stack(masks), kept, skipped)
