"""One item's files around :func:`~gloper_jobs.jobs.pipeline.process_photo`, local or in object storage.

The one place that knows where an item's photo and label are read from and where its
masks go; :func:`segment_item` is the extract and calibrate kinds' one call of
``process_photo``, in the embedded run and in a worker alike:

- **inputs**: under a local dataset root, the photo and label as stored, each checked to
  lie inside the root just before it is read (:func:`gloper_jobs.paths.item_inputs`, so a
  retried item is checked again); under an ``s3://`` prefix, ``<prefix>/<rel_path>`` (and
  the label) streamed into this process's scratch folder (:func:`gloper_jobs.remote.scratch_dir`);
- **outputs**: a local results folder is written in place; for an ``s3://`` results prefix
  the masks are written to scratch, then published: one object per mask file, ``choice.json``
  last (its presence means the masks are complete), the records pointing at the objects.

The scratch folder is emptied after every item. Storage errors are
:func:`gloper_jobs.storage.classify`'d: throttling is retried, a denied key or a missing
object fails the item with what to fix.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from gloper_jobs.data.outputs import CHOICE_FILE
from gloper_jobs.paths import item_inputs
from gloper_jobs.remote import object_url, scratch_dir
from gloper_jobs.storage import get_file, is_url, join, put_file

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.methods.base import Segmenter
    from gloper_jobs.store.models import Item, Job


def photo_location(job: Job, item: Item) -> str | Path:
    """Where ``item``'s photo is read from: its object URL for an ``s3://`` dataset, else its path."""
    return object_url(job.dataset, item.rel_path) if is_url(job.dataset) else Path(item.path)


@dataclass(frozen=True)
class ItemFiles:
    """An item's inputs as local files and the local folder its masks are written to.

    ``publish_to`` is the ``s3://`` prefix :meth:`publish` uploads ``out_dir`` to (None:
    ``out_dir`` is the results folder itself).
    """

    photo: Path
    label: Path | None
    out_dir: Path
    publish_to: str | None = None

    def publish(self, outcome: ItemOutcome) -> ItemOutcome:
        """``outcome`` with its masks where the job keeps them: uploaded to :attr:`publish_to`
        (every mask file, then ``choice.json``), each record's ``mask_path`` the object's URL."""
        if self.publish_to is None:
            return outcome
        url = self.publish_to
        records = [replace(c, mask_path=put_file(Path(c.mask_path), join(url, Path(c.mask_path).name)))
                   if c.mask_path else c for c in outcome.candidates]
        put_file(self.out_dir / CHOICE_FILE, join(url, CHOICE_FILE))
        return replace(outcome, candidates=records)


@contextmanager
def item_files(job: Job, item: Item, rel_out: str, staging_dir: Path) -> Iterator[ItemFiles]:
    """``item``'s files for one try (see the module docstring), its masks going to
    ``<job.results_dir>/<rel_out>``; a scratch folder is made only when something is in object storage."""
    remote_in, remote_out = is_url(job.dataset), is_url(job.results_dir)
    out = Path(job.results_dir) / rel_out
    if not (remote_in or remote_out):
        yield ItemFiles(*item_inputs(job.dataset, item.path, item.label_path), out)
        return
    with tempfile.TemporaryDirectory(dir=scratch_dir(staging_dir)) as tmp:
        work = Path(tmp)
        if remote_in:
            photo = get_file(object_url(job.dataset, item.rel_path), work / "in" / PurePosixPath(item.rel_path).name)
            label = None if not item.label_path else get_file(
                object_url(job.dataset, item.label_path), work / "label" / PurePosixPath(item.label_path).name)
        else:
            photo, label = item_inputs(job.dataset, item.path, item.label_path)
        if remote_out:
            yield ItemFiles(photo, label, work / "out", publish_to=object_url(job.results_dir, rel_out))
        else:
            yield ItemFiles(photo, label, out)


def segment_item(ctx: WorkerContext, job: Job, item: Item, segmenter: Segmenter, rel_out: str) -> ItemOutcome:
    """Segment ``item``'s photo with the job's foreground, label and Dice size; its masks go to
    ``<job.results_dir>/<rel_out>`` (a folder, or an object prefix)."""
    from gloper_jobs.jobs.pipeline import process_photo

    settings = ctx.settings
    with item_files(job, item, rel_out, settings.staging_dir) as files:
        outcome = process_photo(
            files.photo, segmenter, files.out_dir, ctx.foreground(job.foreground_model), files.label,
            item.species, job.eval_size, settings.max_image_pixels, decode=settings.decode,
            write_candidates=settings.write_candidates, foreground_rim=job.foreground_rim,
        )
        return files.publish(outcome)
