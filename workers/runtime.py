"""Per-process state of a worker, and the checks a worker runs before it takes any task.

- :class:`BootCheck` (a worker bootstep) validates settings, the Redis visibility
  timeout, the store's schema, the methods' registry and the foreground weights in
  the worker's main process, and refuses to start when one is wrong. It never
  touches CUDA: the main process forks the pool's children.
- ``worker_process_init`` builds a :class:`~gloper_jobs.jobs.context.WorkerContext`
  in each child (after the fork): models load there, once, and stay cached.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from typing import TYPE_CHECKING, Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init, worker_process_shutdown

from gloper_jobs.exceptions import ConfigurationError, StoreUnavailableError
from gloper_jobs.jobs.kinds import check_time_limits
from gloper_jobs.settings import Settings

if TYPE_CHECKING:
    from gloper_jobs.jobs.context import WorkerContext

log = logging.getLogger(__name__)

_context: WorkerContext | None = None
_node: str | None = None


def boot_checks(settings: Settings) -> None:
    """Everything a worker must know is right before its first task; raises GloperError."""
    from gloper_jobs.foreground.weights import locate_model
    from gloper_jobs.store.db import Store

    check_time_limits(settings)
    for name in settings.plugin_modules:  # imported in the children; here only found
        if importlib.util.find_spec(name) is None:
            raise ConfigurationError(f"GLOPER_PLUGINS names {name!r}, which is not importable here")
    store = Store(settings.database_url)  # migrates (one worker at a time on PostgreSQL)
    store.dispose()  # no connection may cross the fork
    if settings.foreground_model != "none":
        locate_model(settings.models_dir, settings.foreground_model)
    if settings.results_url:  # masks go to S3: a missing bucket or a denied key stops the worker here
        from gloper_jobs.exceptions import StorageUnavailableError
        from gloper_jobs.storage import check_bucket

        try:
            check_bucket(settings.results_url)
        except StorageUnavailableError as exc:  # throttled or down now: the items will retry
            log.warning("results bucket not checked: %s", exc)


class BootCheck(bootsteps.StartStopStep):
    """Runs :func:`boot_checks` when the worker starts; an error stops the worker."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        global _node
        super().__init__(worker, **kwargs)
        _node = getattr(worker, "hostname", None)
        boot_checks(worker.app.gloper_settings)


class Reconciler(bootsteps.StartStopStep):
    """Every ``stale_seconds / 2`` s, re-enqueue running items whose heartbeat stopped
    and queued items whose message is stranded.

    A task whose worker died with its whole node, or a message left in a dead
    consumer's unacknowledged hash, stays in Redis until the visibility timeout
    (hours): this brings it back within ``stale_seconds`` (``stranded_seconds``).
    Every ``broker_check_seconds`` (and on each reconnect) it also looks for a Redis
    that restarted or was emptied (:class:`~gloper_jobs.jobs.publishing.BrokerWatch`)
    and publishes what it lost at once.
    It imports nothing that loads torch (the pool forks from this process). It runs on the
    consumer's timer in the main thread: a thread of its own could hold a lock
    (the import lock, a connection) at the moment the pool forks, and the new
    pool process would hang on it.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self._timer_ref: Any = None
        self._watch_ref: Any = None
        self._watch: Any = None
        self._store: Any = None
        self._store_back_at = float("-inf")  # when the store answered again after an outage
        self._not_before = float("-inf")  # no pass before this (a slow link: see _paced)

    def start(self, consumer: Any) -> None:
        from gloper_jobs.defaults import LOST_GRACE_SECONDS
        from gloper_jobs.jobs.publishing import BrokerWatch

        settings: Settings = consumer.app.gloper_settings
        if self._watch is None:  # kept across the consumer's restarts (a broker outage): it
            self._watch = BrokerWatch(LOST_GRACE_SECONDS)  # remembers the run id from before
        self._timer_ref = consumer.timer.call_repeatedly(settings.stale_seconds / 2, self._pass,
                                                         (consumer.app,), priority=10)
        self._watch_ref = consumer.timer.call_repeatedly(settings.broker_check_seconds, self._check_broker,
                                                         (consumer.app,), priority=10)
        self._not_before = float("-inf")
        self._check_broker(consumer.app)  # at once: a reconnect after an outage starts here

    def stop(self, consumer: Any) -> None:
        for ref in (self._timer_ref, self._watch_ref):
            if ref is not None:
                ref.cancel()
        self._timer_ref = self._watch_ref = None

    def _paced(self) -> bool:
        """Whether a pass may run now: after one that took ``d`` s the loop is left alone for
        ``d / RECONCILER_LOOP_SHARE - d`` s, so that over a slow link (each store and Redis
        round trip 0.6 s) these passes never starve the worker of messages."""
        return time.monotonic() >= self._not_before

    def _ran(self, started: float, ok: bool) -> None:
        """Pace the next pass after one that succeeded slowly (a slow link); a failed one (an
        outage) is not paced, so the first pass after it runs as soon as its timer says."""
        from gloper_jobs.defaults import RECONCILER_LOOP_SHARE

        if not ok:
            return
        took = time.monotonic() - started
        self._not_before = time.monotonic() + took * (1 / RECONCILER_LOOP_SHARE - 1)
        if took > 1.0:
            log.warning("reconciler pass took %.1f s (a slow link to the store or Redis): the next "
                        "waits %.0f s", took, took * (1 / RECONCILER_LOOP_SHARE - 1))

    def _check_broker(self, app: Celery) -> None:
        """Publish again, at once, what a restarted or emptied Redis lost (:class:`BrokerWatch`)."""
        from gloper_jobs.store.db import Store
        from workers.publish import CeleryPublisher

        settings: Settings = app.gloper_settings
        if self._watch is None or not self._paced():
            return
        started, ok = time.monotonic(), False
        try:
            if self._store is None:
                self._store = Store(settings.database_url, migrate=False)
            publisher = CeleryPublisher(app)
            self._watch.check(self._store, publisher, publisher)
            ok = True
        except Exception as exc:  # noqa: BLE001 - store or broker down: the next check retries
            log.warning("broker check failed: %s", exc)
        finally:
            if self._store is not None:
                self._store.dispose()  # hold no connection across the pool's forks
            self._ran(started, ok)

    def _pass(self, app: Celery) -> None:
        from gloper_jobs.jobs.publishing import reconcile  # torch-free: see that module
        from gloper_jobs.store.db import Store
        from workers.publish import CeleryPublisher

        settings: Settings = app.gloper_settings
        if not self._paced():
            return
        started, ok = time.monotonic(), False
        try:
            if self._store is None:
                self._store = Store(settings.database_url, migrate=False)
            # After a store outage every heartbeat is old: give the running items one
            # stale period to beat again before calling any of them stale.
            settled = time.monotonic() - self._store_back_at > settings.stale_seconds
            n = reconcile(self._store, settings, CeleryPublisher(app), include_stale=settled)
            if n:
                log.warning("re-enqueued %d stale or stranded item(s)", n)
        except StoreUnavailableError as exc:
            self._store_back_at = float("inf")
            log.warning("reconciler pass failed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the next pass retries
            log.warning("reconciler pass failed: %s", exc)
        else:
            ok = True
            if self._store_back_at == float("inf"):
                self._store_back_at = time.monotonic()
        finally:
            if self._store is not None:
                self._store.dispose()  # hold no connection across the pool's forks
            self._ran(started, ok)


class WindowStep(bootsteps.StartStopStep):
    """With ``GLOPER_WINDOW`` (``gloper worker --window 20:00-06:00``), consume only inside it.

    Every ``WINDOW_CHECK_SECONDS`` it compares the local time with the window: outside
    it the worker cancels its queues (the item in hand finishes, nothing new is
    taken), inside it adds them back in their priority order. It first runs when the
    consumer starts, before the event loop fetches anything, so a worker started
    outside its window takes nothing.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        self._timer_ref: Any = None
        self._queues: list[str] = []
        self._paused = False

    def start(self, consumer: Any) -> None:
        from gloper_jobs.defaults import WINDOW_CHECK_SECONDS
        from gloper_jobs.window import Window

        settings: Settings = consumer.app.gloper_settings
        if not settings.window:
            return
        window = Window.parse(settings.window)
        if not self._queues:
            self._queues = [q.name for q in consumer.task_consumer.queues]
        self._check(consumer, window)
        self._timer_ref = consumer.timer.call_repeatedly(WINDOW_CHECK_SECONDS, self._check,
                                                         (consumer, window), priority=10)

    def stop(self, consumer: Any) -> None:
        if self._timer_ref is not None:
            self._timer_ref.cancel()
            self._timer_ref = None

    def _check(self, consumer: Any, window: Any) -> None:
        open_now = window.open_now()
        if not open_now and not self._paused:
            for q in self._queues:
                consumer.cancel_task_queue(q)
            self._paused = True
            log.warning("outside the window %s: paused (queues %s)", window, ",".join(self._queues))
        elif open_now and self._paused:
            for q in self._queues:  # in their order: urgent, normal, bulk
                consumer.add_task_queue(q)
            self._paused = False
            log.warning("inside the window %s: consuming again", window)


def install(app: Celery) -> None:
    """Add the boot check, the reconciler and the window to ``app``'s workers."""
    app.steps["worker"].add(BootCheck)
    app.steps["consumer"].add(Reconciler)
    app.steps["consumer"].add(WindowStep)


def context() -> WorkerContext:
    """This process's context; built here if ``worker_process_init`` could not (store down)."""
    global _context
    if _context is None:
        from gloper_jobs.jobs.context import WorkerContext
        from workers.app import app

        settings: Settings = app.gloper_settings
        _context = WorkerContext.boot(settings, _node)  # loads GLOPER_PLUGINS too
    return _context


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    try:
        context()
    except Exception:  # noqa: BLE001 - logged; the first task builds it again and reports
        log.exception("worker process could not load its models; the first task will retry")


@worker_process_shutdown.connect
def _close_child(**_: Any) -> None:
    global _context
    if _context is not None:
        _context.close()
        _context = None
