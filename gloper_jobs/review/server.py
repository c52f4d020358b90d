"""Serving the review app: waitress on 127.0.0.1 (unless told otherwise), one token per name.

As Jupyter does, each person gets a URL with a random token
(:func:`secrets.token_urlsafe`); the token's name is who each decision is recorded as.
"""

from __future__ import annotations

import errno
import secrets
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gloper_jobs import defaults
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.review.app import Review, create_app
from gloper_jobs.review.background import Repointer
from gloper_jobs.review.thumbs import ThumbCache
from gloper_jobs.store import Store
from gloper_jobs.store.repository import get_job

THREADS = 8  # requests served at once (pictures are made in these threads)


@dataclass
class ReviewServer:
    """A started review server: its URLs (one per name), the app's state, the waitress server."""

    review: Review
    host: str
    port: int
    tokens: dict[str, str]  # who -> token
    server: Any = field(repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    def url(self, who: str) -> str:
        """The address ``who`` opens (with their token)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/?token={self.tokens[who]}"

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C) or :meth:`close`."""
        try:
            self.server.run()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def run_in_thread(self) -> None:
        """Serve from a background thread (tests and benchmarks) until :meth:`close`."""
        from waitress import wasyncore

        def serve() -> None:
            while not self._stopping.is_set():  # short rounds: close() is noticed within 0.2 s
                wasyncore.loop(timeout=0.2, map=self.server._map, count=1)

        self.thread = threading.Thread(target=serve, name="gloper-review", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving (a re-pointing pass that is running stops with the process, resumable)."""
        self._stopping.set()
        if self.thread is not None:
            self.thread.join(5)
        try:
            self.server.task_dispatcher.shutdown(timeout=2)
        finally:
            self.server.close()


def _bind(app: Any, host: str, port: int, fallback: bool) -> Any:
    from waitress.server import create_server

    try:
        return create_server(app, host=host, port=port, threads=THREADS, ident="gloper-review",
                             clear_untrusted_proxy_headers=True)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and fallback:
            return create_server(app, host=host, port=0, threads=THREADS, ident="gloper-review",
                                 clear_untrusted_proxy_headers=True)
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(f"port {port} on {host} is in use: pass another --port, or --port 0 "
                                     "for a free one") from exc
        raise ConfigurationError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); check --host") from exc


def start_review(store: Store, job_id: int, names: Sequence[str], cache_dir: Path, host: str = "127.0.0.1",
                 port: int | None = None, per_page: int = defaults.REVIEW_PAGE_PHOTOS,
                 side: int = defaults.REVIEW_THUMB_SIDE,
                 batch: int = defaults.REVIEW_REPOINT_BATCH) -> ReviewServer:
    """Bind the review page of job ``job_id`` (``port`` None: :data:`~gloper_jobs.defaults.REVIEW_PORT`,
    or a free port when that one is busy; 0: a free port) with one token per name in ``names``.

    Raises :class:`~gloper_jobs.exceptions.JobNotFoundError` for an unknown job and
    :class:`~gloper_jobs.exceptions.ConfigurationError` for a port that cannot be used or
    no name. Nothing is served until :meth:`ReviewServer.run`.
    """
    wanted = list(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    if not wanted:
        raise ConfigurationError("--name needs at least one non-empty name (who the decisions are recorded as)")
    if not 1 <= per_page <= 50:
        raise ConfigurationError(f"photos per page {per_page}: use 1 to 50 (6-12 are easy to judge)")
    with store.session() as s:
        job = get_job(s, job_id)
    if job.kind != "extract":
        raise ConfigurationError(f"job {job_id} is a {job.kind} job: review an extract job (`gloper jobs` lists them)")
    tokens = {who: secrets.token_urlsafe(24) for who in wanted}
    lock = threading.RLock()
    review = Review(store=store, job_id=job_id, tokens={t: who for who, t in tokens.items()},
                    cache=ThumbCache(cache_dir, store.url, job, side),
                    repointer=Repointer(store, job_id, batch, lock), per_page=per_page, lock=lock)
    app = create_app(review)
    server = _bind(app, host, defaults.REVIEW_PORT if port is None else port, fallback=port is None)
    # one address: its port; a name with several addresses (localhost): the first one's
    bound = int(getattr(server, "effective_port", None) or server.effective_listen[0][1])
    review.cookie = f"gloper_review_{bound}"  # cookies ignore the port: two servers keep theirs apart
    return ReviewServer(review, host, bound, tokens, server)
