"""Re-pointing a job's photos after a decision, in a thread beside the page.

A click stores the decision and returns; :class:`Repointer` then runs
:func:`gloper_jobs.jobs.repointing.repoint` (batches, each committed, resumable) in one
background thread per job, keeping its progress after every batch. A decision made while it runs asks for one more pass, so
the last decision is always applied; the page polls :meth:`Repointer.state`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlmodel import Session

    from gloper_jobs.jobs.repointing import RepointSummary
    from gloper_jobs.store import Store


class LockedStore:
    """``store`` whose every session holds ``lock``: a re-pointing batch reads the job's
    polarity data and writes it back with its counts, so a decision committed in between
    would be overwritten; with the page's decisions taken under the same lock, neither
    waits longer than one batch or one decision."""

    def __init__(self, store: Store, lock: Any) -> None:
        self.store = store
        self.lock = lock

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.lock, self.store.session() as s:
            yield s

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


class Repointer:
    """One job's background re-pointing: :meth:`request` starts (or queues) a pass."""

    def __init__(self, store: Store, job_id: int, batch: int | None, lock: Any) -> None:
        self.store = LockedStore(store, lock)
        self.job_id = job_id
        self.batch = batch
        self._lock = threading.Lock()
        self._wanted = False
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"running": False, "passes": 0, "started": None, "finished": None,
                                       "result": None, "error": None, "progress": None,
                                       "repointed": 0}

    def request(self) -> None:
        """Re-point the job now, or once more when the running pass ends."""
        with self._lock:
            self._wanted = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"repoint-job-{self.job_id}", daemon=True)
                self._state["running"] = True
                self._thread.start()

    def _loop(self) -> None:
        from gloper_jobs.jobs.repointing import repoint

        while True:
            with self._lock:
                if not self._wanted:
                    self._state["running"] = False
                    return
                self._wanted = False
                self._state.update(started=time.time(), error=None, progress=None)
            try:
                summary = repoint(self.store, self.job_id, self.batch, progress=self._progress)  # type: ignore[arg-type]
                result: dict[str, Any] | None = dataclasses.asdict(summary)
                error = None
            except Exception as exc:  # noqa: BLE001 - shown on the page; the next decision retries
                result, error = None, f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            with self._lock:
                self._state.update(finished=time.time(), result=result, error=error,
                                   passes=self._state["passes"] + 1,
                                   repointed=self._state["repointed"] + int((result or {}).get("repointed", 0)))

    def _progress(self, summary: RepointSummary) -> None:
        with self._lock:
            self._state["progress"] = dataclasses.asdict(summary)

    def state(self) -> dict[str, Any]:
        """``running``, ``passes`` done, ``started`` / ``finished`` (epoch s) of the last pass,
        its ``progress`` so far and ``result``, ``repointed``: photos re-pointed by every pass so far, (:class:`~gloper_jobs.jobs.repointing.RepointSummary`
        as a dict) or ``error``."""
        with self._lock:
            return dict(self._state)

    def wait(self, timeout: float) -> bool:
        """Wait until no pass runs or is wanted (tests, shutdown); True when idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                thread = self._thread
                if not self._wanted and (thread is None or not thread.is_alive()):
                    return True
            if thread is not None:
                thread.join(min(0.1, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(0.05)
        return False
