"""Seconds per GloPER item in a fresh and in a replacement pool process, and with 1 and 2 workers.

Issue [ops] 4: a pool process forked by a worker whose main process had loaded
libtorch inherited a broken OpenMP state and ran GloPER about 4x slower after a
kill -9 replaced it. This runs, against real Redis and PostgreSQL:

1. one ``gloper worker --gpus cpu`` (one pool process, the launcher's default
   threads: cores / processes), a GloPER job; after a few items its pool process
   is killed with SIGKILL and the replacement process finishes the job. Seconds
   per item (the store's ``item.seconds``) in the first and in the replacement
   process, and their ratio (about 1 when the replacement is healthy);
2. the same work with two single-process workers on this node (each gets
   cores / 2 threads): seconds per item and items per second against (1).

    python -m bench.pool_speed --photos 12 --out pool-speed
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

from bench import machine
from bench.services import job_id, services, write
from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.testbed.cluster import GLOPER, Cluster, drained, items


def _env(cluster: Cluster) -> dict[str, str]:
    """The cluster's environment without its fixed torch threads: the launcher's default applies."""
    return {k: v for k, v in cluster.env.items() if k not in ("GLOPER_TORCH_THREADS", "OMP_NUM_THREADS")}


def _start(cluster: Cluster, name: str) -> subprocess.Popen[bytes]:
    log = cluster.workdir / f"worker-{name}.log"
    proc = subprocess.Popen([*GLOPER, "worker", "--gpus", "cpu", "--name", name, "--concurrency", "1"],
                            env=_env(cluster), cwd=cluster.workdir, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    cluster.workers.append((name, proc, log))
    return proc


def _per_process(cluster: Cluster, job: int) -> dict[str, list[float]]:
    """Seconds of each finished item, grouped by the pool process (``<node>:<pid>``) that ran it."""
    out: dict[str, list[float]] = {}
    for it in items(cluster.store(), job).values():
        if it.status == "done" and it.worker and it.seconds is not None:
            out.setdefault(it.worker, []).append(float(it.seconds))
    return out


def _submit(cluster: Cluster, photos: Path, params: list[str]) -> int:
    out = cluster.gloper("submit", "extract", str(photos), "--method", "gloper", "--device-class", "cpu",
                         "--no-foreground", *[a for p in params for a in ("--param", p)])
    return job_id(out.stdout)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=12, help="photos per job (a multiple of 4)")
    ap.add_argument("--param", action="append", default=["size=64", "local_sizes=8,16", "steps=40",
                                                         "stop_every=0"],
                    help="GloPER parameters of the job (default: a few seconds per item here)")
    ap.add_argument("--out", default="pool-speed")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="gloper-pool-speed-"))
    make_dataset(work / "photos", per_species=max(1, args.photos // 4), size=96)
    result: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg(),
                              "params": args.param, "photos": args.photos}
    with services(work) as cluster:
        # 1. one worker; kill its pool process after a third of the items
        job = _submit(cluster, work / "photos", args.param)
        store = cluster.store()
        _start(cluster, "solo")
        t0 = time.monotonic()
        cluster.wait_for(lambda: sum(len(v) for v in _per_process(cluster, job).values()) >= args.photos // 3,
                         900, "the first items")
        first = next(iter(_per_process(cluster, job)))

        def running_pid() -> int | None:
            for it in items(store, job).values():
                if it.status == "running" and it.worker == first:
                    return int(first.rsplit(":", 1)[1])
            return None

        cluster.wait_for(lambda: running_pid() is not None, 300, "an item running in the first process")
        os.kill(int(first.rsplit(":", 1)[1]), signal.SIGKILL)
        cluster.wait_for(lambda: drained(store, job), 1800, "the job to drain after the kill")
        solo_wall = time.monotonic() - t0
        per = _per_process(cluster, job)
        fresh = per.pop(first)
        replacement = [s for secs in per.values() for s in secs]
        result["kill"] = {
            "fresh_s_per_item": round(mean(fresh), 3), "fresh_items": len(fresh),
            "replacement_s_per_item": round(mean(replacement), 3) if replacement else None,
            "replacement_items": len(replacement),
            "replacement_over_fresh": round(mean(replacement) / mean(fresh), 3) if replacement else None,
        }
        cluster.stop()
        # 2. the same work on two workers (a new job: another seed)
        job2 = _submit(cluster, work / "photos", [*args.param, "seed=42"])
        t0 = time.monotonic()
        for name in ("pair-a", "pair-b"):
            _start(cluster, name)
        cluster.wait_for(lambda: drained(store, job2), 1800, "the two-worker job to drain")
        pair_wall = time.monotonic() - t0
        pair = [s for secs in _per_process(cluster, job2).values() for s in secs]
        result["workers"] = {
            "one_worker_s_per_item": round(mean(fresh), 3),
            "two_workers_s_per_item": round(mean(pair), 3),
            "one_worker_wall_s": round(solo_wall, 1), "two_workers_wall_s": round(pair_wall, 1),
            "one_worker_items_per_s": round(args.photos / solo_wall, 3),
            "two_workers_items_per_s": round(args.photos / pair_wall, 3),
            "note": "wall times include each worker's boot (torch, the store) and, for one worker, the kill",
        }
        result["load_after"] = os.getloadavg()
    return write(args.out, result)


if __name__ == "__main__":
    main()
