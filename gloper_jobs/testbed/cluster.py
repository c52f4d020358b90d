"""Running the real commands as subprocesses: `gloper submit`, `gloper worker --gpus cpu`.

:class:`Cluster` holds the environment of one test's or benchmark's services (store, broker,
results folder) and starts workers that drain the queue; the caller then asserts on, or
measures, the store (:func:`drained`, :func:`counts`, :func:`items`, :func:`candidate_rows`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func
from sqlmodel import col, select

from gloper_jobs.settings import Settings
from gloper_jobs.store import Candidate, Item, ItemStatus, Store
from gloper_jobs.store import repository as repo

#: the `gloper` command, as the console script runs it
GLOPER = [sys.executable, "-m", "gloper_jobs.cli"]


@dataclass
class Cluster:
    """The services and worker processes of one test."""

    database_url: str
    broker_url: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLOPER_")}
        env.update({
            "GLOPER_DATABASE_URL": self.database_url,
            "GLOPER_BROKER_URL": self.broker_url,
            "GLOPER_RESULTS_DIR": str(self.workdir / "results"),
            "GLOPER_TORCH_THREADS": "1",
            "GLOPER_HEARTBEAT_SECONDS": "1",
            "GLOPER_STALE_SECONDS": "10",
        })
        env.update(self.extra_env)
        return env

    def settings(self) -> Settings:
        """The same settings the subprocesses see, built in this process."""
        keys = {k[len("GLOPER_"):].lower(): v for k, v in self.env.items() if k.startswith("GLOPER_")}
        return Settings(**keys)  # type: ignore[arg-type]

    def store(self) -> Store:
        return Store(self.database_url)

    def gloper(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``gloper ARGS`` and return it (raises on a non-zero exit, showing its output)."""
        proc = subprocess.run([*GLOPER, *args], env=self.env, cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"gloper {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start_worker(self, name: str, *extra: str, env: dict[str, str] | None = None,
                     cwd: Path | None = None, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """``gloper worker --gpus cpu``; ``env`` adds to (or overrides) the cluster's
        environment, ``cwd`` replaces the working folder (a node of its own) and ``prefix``
        runs it elsewhere (``ip netns exec NODE``, :mod:`.netns`)."""
        log = (cwd or self.workdir) / f"worker-{name}.log"
        proc = subprocess.Popen(
            [*prefix, *GLOPER, "worker", "--gpus", "cpu", "--name", name,
             "--loglevel", "INFO", *extra],
            env={**self.env, **(env or {})}, cwd=cwd or self.workdir, stdout=log.open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.workers.append((name, proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{log.read_text(errors='replace')[-4000:]}"
                         for name, _, log in self.workers)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for name, proc, _ in self.workers:
                if proc.poll() is not None:
                    raise AssertionError(f"worker {name} exited ({proc.returncode}) while waiting for {what}\n"
                                         + self.logs())
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + self.logs())

    def stop(self) -> None:
        """SIGTERM every worker's process group (launcher, celery, pool), then SIGKILL."""
        for _, proc, _ in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for _, proc, _ in self.workers:
            try:
                proc.wait(timeout=max(0.5, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group
            except ProcessLookupError:
                pass
            proc.wait()
        self.workers.clear()


#: item states that still have work ahead of them
UNFINISHED = (ItemStatus.pending.value, ItemStatus.queued.value, ItemStatus.running.value)


def counts(store: Store, job_id: int) -> dict[str, int]:
    """Number of the job's items in each state."""
    with store.session() as s:
        return repo.status_counts(s, job_id)


def drained(store: Store, job_id: int) -> bool:
    """The job has items and none of them is unfinished."""
    c = counts(store, job_id)
    return sum(c.values()) > 0 and not any(c.get(k) for k in UNFINISHED)


def items(store: Store, job_id: int) -> dict[str, Item]:
    """The job's items by relative path."""
    with store.session() as s:
        return {i.rel_path: i for i in s.exec(select(Item).where(Item.job_id == job_id)).all()}


def candidate_rows(store: Store, job_id: int) -> list[tuple[str, str, int]]:
    """(rel_path, candidate name, number of rows) for every candidate of the job."""
    with store.session() as s:
        rows = s.exec(
            select(Item.rel_path, Candidate.name, func.count())
            .join(Candidate, col(Candidate.item_id) == col(Item.id))
            .where(Item.job_id == job_id).group_by(Item.rel_path, Candidate.name)
        ).all()
    return [(r, n, int(c)) for r, n, c in rows]


def overlapping_runs(log: Path) -> list[str]:
    """Photos whose runs in ``log`` (the fake method ``slow_logger``'s ``--param log=``)
    overlapped in time (two processes at once). A run without an end (its process was killed) counts from its start to its start."""
    spans: dict[tuple[str, str], list[float]] = {}
    for line in log.read_text().splitlines():
        what, name, pid, t = line.split()
        spans.setdefault((name, pid), []).append(float(t))
    by_name: dict[str, list[tuple[float, float]]] = {}
    for (name, _pid), times in spans.items():
        ends = times[1::2] + times[len(times[1::2]) * 2::2]  # an unfinished run ends where it began
        for start, end in zip(times[0::2], ends, strict=False):
            by_name.setdefault(name, []).append((start, end))
    bad = []
    for name, runs in by_name.items():
        runs.sort()
        if any(b[0] < a[1] for a, b in zip(runs, runs[1:], strict=False)):
            bad.append(name)
    return bad
