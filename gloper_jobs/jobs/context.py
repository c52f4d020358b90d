"""What a process that runs items keeps between them: store, segmenters, foreground models.

The embedded run builds one :class:`WorkerContext` for the whole dataset; a Celery
worker builds one per pool process after the fork (``worker_process_init``), so
models load once per process and CUDA is only ever initialised there.
"""

from __future__ import annotations

import os
import socket
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from gloper_jobs.devices import configure_torch
from gloper_jobs.foreground import ForegroundFn, build_foreground
from gloper_jobs.methods.cache import SegmenterCache
from gloper_jobs.settings import Settings
from gloper_jobs.store import Item, Job, Store

if TYPE_CHECKING:
    from gloper_jobs.jobs.pipeline import ItemOutcome
    from gloper_jobs.methods.base import Segmenter


@dataclass
class WorkerContext:
    """Per-process state for running items (built once; see the module docstring).

    ``overrides`` are method parameters that do not change a result (a device named
    on the command line): they are applied to every segmenter this context builds.
    """

    settings: Settings
    store: Store
    segmenters: SegmenterCache
    host: str
    worker: str
    overrides: dict[str, Any] = field(default_factory=dict)
    _foregrounds: dict[str, ForegroundFn | None] = field(default_factory=dict)

    @classmethod
    def boot(cls, settings: Settings, node: str | None = None, preload: bool = True,
             store: Store | None = None) -> WorkerContext:
        """Load plugins, set torch threads, open the store and load the default foreground model.

        ``node`` is the worker's name (``gpu0@host``); the item rows record
        ``<node>:<pid>``, which also tells an operator which process to look at.
        """
        from gloper_jobs.methods.registry import build_segmenter, load_plugins

        load_plugins(settings.plugin_modules)
        configure_torch(settings.torch_threads, settings.compile_cache_dir)
        store = store or Store(settings.database_url)

        def build(method: str, profile: str | None, params: dict[str, Any]) -> Segmenter:
            with store.session() as s:  # a calibration's grid may name its model by its name in the store
                return build_segmenter(method, settings, profile, params, session=s)

        host = socket.gethostname()
        ctx = cls(settings, store, SegmenterCache(build), host, f"{node or host}:{os.getpid()}")
        if preload:
            fg = ctx.foreground(settings.foreground_model)
            if fg is not None and hasattr(fg, "alpha"):
                # Build the ONNX session now, not on the first photo.
                import numpy as np

                fg.alpha(np.zeros((8, 8, 3), dtype=np.uint8))
        return ctx

    def foreground(self, model: str) -> ForegroundFn | None:
        """The foreground function of a job's ``foreground_model`` (``none``: whole frame)."""
        if model not in self._foregrounds:
            self._foregrounds[model] = build_foreground(self.settings, model)
        return self._foregrounds[model]

    def segmenter(self, method: str, profile: str | None,
                  params: dict[str, Any]) -> AbstractContextManager[Segmenter]:
        """The cached segmenter of a job's method and an item's parameters (plus ``overrides``),
        held for a ``with`` block (items of an embedded run may run in several threads)."""
        return self.segmenters.lease(method, profile, {**params, **self.overrides})

    def process(self, job: Job, item: Item, segmenter: Segmenter, out_dir: Path | str) -> ItemOutcome:
        """Segment ``item``'s photo with the job's foreground, label and Dice size into ``out_dir``
        (a folder, or an ``s3://`` prefix: :meth:`process_remote`)."""
        from gloper_jobs.jobs.pipeline import process_photo
        from gloper_jobs.paths import item_inputs
        from gloper_jobs.storage import is_url

        if is_url(job.dataset) or is_url(out_dir):
            return self.process_remote(job, item, segmenter, out_dir)
        out_dir = Path(out_dir)

        # the photo and label must stay inside the job's dataset root (checked at every try)
        photo, label = item_inputs(job.dataset, item.path, item.label_path)
        return process_photo(
            photo, segmenter, out_dir, self.foreground(job.foreground_model), label, item.species,
            job.eval_size, self.settings.max_image_pixels, decode=self.settings.decode,
            write_candidates=self.settings.write_candidates, foreground_rim=job.foreground_rim,
        )

    def process_remote(self, job: Job, item: Item, segmenter: Segmenter, out: str | Path) -> ItemOutcome:
        """:meth:`process` for a job whose photos or results are in object storage.

        The photo (and label) is streamed from ``<job.dataset>/<rel_path>`` when the dataset
        is a URL; masks are written to a scratch folder and uploaded to ``out`` when it is a
        URL (``choice.json`` last, so its presence means the masks are complete). Storage
        errors are :func:`gloper_jobs.storage.classify`'d: throttling is retried, a denied
        key or a missing object fails the item with what to fix.
        """
        from gloper_jobs.data.outputs import CHOICE_FILE
        from gloper_jobs.jobs.pipeline import process_photo
        from gloper_jobs.paths import item_inputs
        from gloper_jobs.remote import object_url, scratch_dir
        from gloper_jobs.storage import get_file, is_url, join, put_file

        with tempfile.TemporaryDirectory(dir=scratch_dir(self.settings.staging_dir)) as tmp:
            work = Path(tmp)
            if is_url(job.dataset):
                photo = get_file(object_url(job.dataset, item.rel_path), work / "in" / PurePosixPath(item.rel_path).name)
                label = None
                if item.label_path:
                    label = get_file(object_url(job.dataset, item.label_path),
                                     work / "label" / PurePosixPath(item.label_path).name)
            else:
                photo, label = item_inputs(job.dataset, item.path, item.label_path)
            local_out = work / "out" if is_url(out) else Path(out)
            outcome = process_photo(photo, segmenter, local_out, self.foreground(job.foreground_model), label,
                                    item.species, job.eval_size, self.settings.max_image_pixels,
                                    decode=self.settings.decode,
                                    write_candidates=self.settings.write_candidates,
                                    foreground_rim=job.foreground_rim)
            if not is_url(out):
                return outcome
            url = str(out)
            records = [replace(c, mask_path=put_file(Path(c.mask_path), join(url, Path(c.mask_path).name)))
                       if c.mask_path else c for c in outcome.candidates]
            put_file(local_out / CHOICE_FILE, join(url, CHOICE_FILE))
            return replace(outcome, candidates=records)

    def device_label(self, ran_on: str | None) -> str | None:
        """The device to record: the card this worker is bound to when the method used CUDA."""
        if ran_on and ran_on.startswith("cuda") and self.settings.worker_device:
            return self.settings.worker_device
        return ran_on

    def close(self) -> None:
        self.segmenters.clear()
        self.store.dispose()
