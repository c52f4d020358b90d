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
from dataclasses import dataclass, field

from gloper_jobs.devices import default_torch_threads
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.jobs.queues import all_queues, queues_for


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
            "--hostname", self.node, "--queues", ",".join(self.queues),
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
                 torch_threads: int | None = None, loglevel: str = "INFO") -> list[WorkerSpec]:
    """The workers ``gloper worker --gpus GPUS`` starts.

    ``gpus`` is ``all``, a list like ``0,2`` or ``cpu``; ``available`` the visible
    cards (:func:`visible_gpus`). GPU workers run one
    process per card (``concurrency`` must then be 1 or None); a CPU worker runs
    ``concurrency`` processes (default 1), each with ``cores // concurrency`` torch
    threads, and each GPU worker ``cores // cards`` (its CPU-side work: read-outs,
    resizing), unless ``torch_threads`` is given. Raises :class:`ConfigurationError`.
    """
    host = "%h"
    unknown = sorted(set(queues or []) - set(all_queues()))
    if unknown:
        raise ConfigurationError(f"unknown queue(s) {', '.join(unknown)}; valid: {', '.join(all_queues())}")
    if gpus == "cpu":
        n = concurrency or 1
        threads = torch_threads or default_torch_threads(n)
        env = {"CUDA_VISIBLE_DEVICES": "", "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": str(threads)}
        return [WorkerSpec(f"{name or 'cpu'}@{host}", queues or queues_for("cpu"), n, env, loglevel)]
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
               "GLOPER_TORCH_THREADS": str(threads)}
        specs.append(WorkerSpec(f"{name or 'gpu'}{k}@{host}", queues or queues_for("gpu"), 1, env, loglevel))
    return specs


def run_workers(specs: list[WorkerSpec], echo: bool = True) -> int:
    """Start every worker, forward SIGINT/SIGTERM to them, wait; returns the worst exit code.

    If one worker exits, the others are stopped too, so a supervisor (systemd,
    Docker) restarts the whole node.
    """
    procs: list[subprocess.Popen[bytes]] = []
    for spec in specs:
        env = {**os.environ, **spec.env}
        if echo:
            print(f"starting {spec.node}: queues {','.join(spec.queues)}, "
                  f"CUDA_VISIBLE_DEVICES={spec.env.get('CUDA_VISIBLE_DEVICES')!r}", flush=True)
        procs.append(subprocess.Popen(spec.argv(), env=env))

    def stop(signum: int, _frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        stop(signal.SIGTERM, None)
        deadline = time.monotonic() + 60
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return max(abs(p.returncode or 0) for p in procs)
