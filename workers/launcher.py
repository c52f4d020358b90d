"""``gloper worker``: one Celery worker process per visible GPU (or CPU workers), supervised.

Each GPU gets its own ``celery -A workers.app worker`` with
``CUDA_VISIBLE_DEVICES=<k>``, a prefork pool of one process, the node name
``gpu<k>@<host>`` and the GPU queues. This process only counts cards with
``nvidia-smi`` (or reads ``CUDA_VISIBLE_DEVICES``); it never imports torch, so no
CUDA context exists before the fork (celery#3402, #6009).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gloper_jobs.defaults import (
    RESTART_BACKOFF,
    RESTART_BACKOFF_MAX,
    RESTART_GIVE_UP,
    RESTART_HEALTHY,
    SHUTDOWN_GRACE,
)
from gloper_jobs.devices import default_torch_threads
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.queues import all_queues, queues_for, with_priorities

#: OpenMP threads that wait for work sleep instead of spinning: two launchers on one node
#: each size their threads for the whole node, and spinning threads of one starve the other
#: (bench/pool_speed.py: 2 workers on 2 cores ran 7x slower per item with spinning threads)
OMP_PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}

@dataclass(frozen=True)
class WorkerSpec:
    """One Celery worker process to start: its node name, queues, pool size and environment."""

    node: str
    queues: list[str]
    concurrency: int
    env: dict[str, str] = field(default_factory=dict)
    loglevel: str = "INFO"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "--pool", "prefork", "--concurrency", str(self.concurrency),
            "--hostname", self.node, "--queues", ",".join(with_priorities(self.queues)),
            "--loglevel", self.loglevel, "--events", "--without-mingle",
        ]


def visible_gpus(cuda_visible_devices: str | None) -> list[str]:
    """GPU indices this node can use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi``'s."""
    if cuda_visible_devices is not None:
        return [g.strip() for g in cuda_visible_devices.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                         text=True, check=False, timeout=30)
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


def plan_workers(gpus: str, available: list[str], concurrency: int | None = None, name: str | None = None,
                 queues: list[str] | None = None,
                 torch_threads: int | None = None, loglevel: str = "INFO",
                 instance: str | None = None) -> list[WorkerSpec]:
    """The workers ``gloper worker --gpus GPUS`` starts.

    ``gpus`` is ``all``, a list like ``0,2`` or ``cpu``; ``available`` the visible
    cards (:func:`visible_gpus`). GPU workers run one
    process per card (``concurrency`` must then be 1 or None); a CPU worker runs
    ``concurrency`` processes (default 1), each with ``cores // concurrency`` torch
    threads unless ``torch_threads`` is given; a GPU worker's process gets
    ``cores // cards`` (cores this process may use). ``OMP_NUM_THREADS`` is set to the same number, so the workers
    of one launcher never oversubscribe the node. Without ``name``, node names carry
    ``instance`` (``gloper worker`` passes its pid: ``cpu-4242@host``), so two
    launchers on one host never share a node name (Flower would merge them).
    Raises :class:`ConfigurationError`.
    """
    host = "%h"
    tag = f"-{instance}" if instance and not name else ""
    unknown = sorted(set(queues or []) - set(all_queues()))
    if unknown:
        raise ConfigurationError(f"unknown queue(s) {', '.join(unknown)}; valid: {', '.join(all_queues())}")
    if gpus == "cpu":
        n = concurrency or 1
        threads = torch_threads or default_torch_threads(n)
        env = {"CUDA_VISIBLE_DEVICES": "", "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": str(threads),
               "OMP_NUM_THREADS": str(threads), **OMP_PASSIVE}
        return [WorkerSpec(f"{name or 'cpu'}{tag}@{host}", queues or queues_for("cpu"), n, env, loglevel)]
    if concurrency not in (None, 1):
        raise ConfigurationError("a GPU worker runs one process per card: drop --concurrency or use --gpus cpu")
    found = available
    if gpus == "all":
        cards = found
    else:
        cards = [g.strip() for g in gpus.split(",") if g.strip()]
        missing = [g for g in cards if g not in found]
        if missing:
            raise ConfigurationError(
                f"GPU(s) {', '.join(missing)} not visible here (visible: {', '.join(found) or 'none'}); "
                "use --gpus all, a subset of the visible ones, or --gpus cpu")
    if not cards:
        raise ConfigurationError("no GPU visible on this node (nvidia-smi found none); use --gpus cpu")
    specs = []
    threads = torch_threads or default_torch_threads(len(cards))
    for k in cards:
        env = {"CUDA_VISIBLE_DEVICES": k, "GLOPER_DEVICE": "cuda", "GLOPER_WORKER_DEVICE": f"cuda:{k}",
               "GLOPER_TORCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), **OMP_PASSIVE}
        specs.append(WorkerSpec(f"{name or 'gpu'}{k}{tag}@{host}", queues or queues_for("gpu"), 1, env, loglevel))
    return specs


def _wait_all(procs: list[subprocess.Popen[bytes]], seconds: float) -> None:
    """Wait up to ``seconds`` in all for every process to exit."""
    deadline = time.monotonic() + seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


@dataclass
class _Running:
    """One supervised worker process and its restart bookkeeping."""

    spec: WorkerSpec
    proc: subprocess.Popen[bytes]
    started: float
    failures: int = 0  # consecutive exits soon after a start
    restart_at: float | None = None


def restart_delay(failures: int, base: float = RESTART_BACKOFF, cap: float = RESTART_BACKOFF_MAX) -> float:
    """Seconds to wait before restarting a worker that exited ``failures`` times in a row soon
    after starting: ``base``, doubling, at most ``cap``."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


def run_workers(specs: list[WorkerSpec], echo: bool = True, give_up_after: int = RESTART_GIVE_UP,
                grace: float = SHUTDOWN_GRACE, on_stopped: Callable[[list[str]], None] | None = None) -> int:
    """Start every worker, restart any that exits, forward SIGINT/SIGTERM; returns the worst exit code.

    A worker that exits while the node is not stopping (a crash, an unrecoverable
    broker error, a kill) is restarted after a backoff (:func:`restart_delay`); the
    others keep working. Only a worker that exits ``give_up_after`` times in a row
    within :data:`RESTART_HEALTHY` s of starting (a configuration error) stops the
    node, so its supervisor (systemd, Docker) reports it.

    On SIGTERM the workers finish their items (warm shutdown) for at most ``grace``
    s; then they are stopped cold (SIGQUIT: the pool ends, unacknowledged messages go
    back to the queue), and killed 15 s later if still there. ``on_stopped(nodes)``
    then runs, to give the items these nodes still hold back to the queue at once.
    """
    def start(spec: WorkerSpec) -> subprocess.Popen[bytes]:
        if echo:
            print(f"starting {spec.node}: queues {','.join(spec.queues)}, "
                  f"CUDA_VISIBLE_DEVICES={spec.env.get('CUDA_VISIBLE_DEVICES')!r}", flush=True)
        return subprocess.Popen(spec.argv(), env={**os.environ, **spec.env})

    running = [_Running(spec, start(spec), time.monotonic()) for spec in specs]
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for r in running:
            if r.proc.poll() is None:
                r.proc.send_signal(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    worst = 0
    try:
        while not stopping:
            now = time.monotonic()
            for r in running:
                if r.restart_at is not None:
                    if now >= r.restart_at:
                        r.proc, r.started, r.restart_at = start(r.spec), now, None
                    continue
                code = r.proc.poll()
                if code is None:
                    continue
                r.failures = r.failures + 1 if now - r.started < RESTART_HEALTHY else 1
                if r.failures >= give_up_after:
                    print(f"{r.spec.node} exited {r.failures} times in a row within {RESTART_HEALTHY:.0f} s "
                          f"of starting (last code {code}); stopping the node: see its log above", flush=True)
                    worst = abs(code) or 1
                    stop(signal.SIGTERM, None)
                    break
                delay = restart_delay(r.failures)
                print(f"{r.spec.node} exited with code {code}; restarting it in {delay:.0f} s", flush=True)
                r.restart_at = now + delay
            time.sleep(0.5)
        _wait_all([r.proc for r in running], grace)
        late = [r for r in running if r.proc.poll() is None]
        if late:
            print(f"{', '.join(r.spec.node for r in late)} still busy after {grace:.0f} s: cold shutdown, "
                  "their items go back to the queue", flush=True)
            for r in late:
                r.proc.send_signal(signal.SIGQUIT)
            _wait_all([r.proc for r in late], 15.0)
            for r in late:
                if r.proc.poll() is None:
                    r.proc.kill()
                    r.proc.wait()
        if on_stopped is not None:
            on_stopped([r.spec.node for r in running])
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return max([worst] + [abs(r.proc.returncode or 0) for r in running if r.restart_at is None])
