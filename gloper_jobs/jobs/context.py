"""What a process that runs items keeps between them: store, segmenters, foreground models.

The embedded run builds one :class:`WorkerContext` for the whole dataset; a Celery
worker builds one per pool process after the fork (``worker_process_init``), so
models load once per process and CUDA is only ever initialised there. It only holds
state: an item's files are :mod:`gloper_jobs.jobs.item_files`.
"""

from __future__ import annotations

import os
import socket
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gloper_jobs.devices import configure_torch
from gloper_jobs.foreground import ForegroundFn, build_foreground
from gloper_jobs.methods.cache import SegmenterCache
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store

if TYPE_CHECKING:
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

    def device_label(self, ran_on: str | None) -> str | None:
        """The device to record: the card this worker is bound to when the method used CUDA."""
        if ran_on and ran_on.startswith("cuda") and self.settings.worker_device:
            return self.settings.worker_device
        return ran_on

    def close(self) -> None:
        self.segmenters.clear()
        self.store.dispose()
