"""Maximum resident memory of `gloper run`, `gloper submit extract` and a worker against the
archive's size: an overnight tool's memory must not grow with the number of photos.

Every archive is hard links of one small JPEG (one inode: 10^5 photos cost no disk), so only
the number of items changes between sizes. ``gloper run`` runs the fake method ``noop``
(:mod:`gloper_jobs.testbed.fake_methods`, the foreground as its one mask) without the
foreground model: what is left is the run's own cost per item, the part that could grow.
Each command is its own process, measured by the kernel (``wait4``'s ``ru_maxrss``).
``--queue`` also submits each archive through ``gloper submit extract`` to a throwaway
PostgreSQL and Redis (:mod:`gloper_jobs.testbed.services`) and drains the smallest two
with one CPU worker (its launcher, Celery's main process and its pool child: the largest
of them).

    python -m bench.memory_scale [--sizes 1000,10000,100000] [--queue] [--out FILE]

Writes ``bench/out/memory-scale.json`` (``--out`` elsewhere); the current figures are in
``bench/results/memory-scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import OUT, processor

PLUGINS = "gloper_jobs.testbed.fake_methods"
#: ``gloper`` as the console script runs it
GLOPER = [sys.executable, "-m", "gloper_jobs.cli"]


#: hard links made of one file (ext4 allows 65,000)
LINKS_PER_FILE = 10_000


def make_archive(root: Path, photos: int) -> Path:
    """``photos`` hard links of a 64x48 JPEG (one copy per :data:`LINKS_PER_FILE`) under
    ``root/Species/``, 1,000 to a folder."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    source = root.parent / f"{root.name}-source.jpg"  # outside the archive: not a photo of it
    for i in range(photos):
        if i % LINKS_PER_FILE == 0:
            source = root.parent / f"{root.name}-source-{i // LINKS_PER_FILE}.jpg"
            Image.new("RGB", (64, 48), (120, 90, 60)).save(source, quality=90)
        folder = root / "Species" / f"roll{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        os.link(source, folder / f"{i:07d}.jpg")
    return root


def measured(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``gloper ARGS``: its maximum resident memory (MB), wall seconds and last output line."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([*GLOPER, *args], env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise SystemExit(f"gloper {' '.join(args)} ran past {timeout} s")
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"gloper {' '.join(args)} exited {proc.returncode}:\n{text[-3000:]}")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return {"max_rss_mb": round(usage.ru_maxrss / 1024, 1), "seconds": round(time.perf_counter() - t0, 1),
            "output": next((ln for ln in lines if ln.startswith("job ")), lines[-1] if lines else "")}


def base_env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOPER_")}
    env.update({"GLOPER_RESULTS_DIR": str(work / "results"), "GLOPER_PLUGINS": PLUGINS,
                "GLOPER_TORCH_THREADS": "1", **extra})
    return env


def run_sizes(sizes: list[int], work: Path, timeout: float) -> list[dict[str, Any]]:
    """``gloper run`` of each size on a SQLite store of its own."""
    rows = []
    for n in sizes:
        root = make_archive(work / f"archive-{n}", n)
        env = base_env(work, GLOPER_DATABASE_URL=f"sqlite:///{work / f'run-{n}.db'}",
                       GLOPER_RESULTS_DIR=str(work / f"results-{n}"))
        row = {"photos": n, **measured(["run", str(root), "--method", "noop", "--no-foreground",
                                        "--no-progress"], env, work, timeout)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def queue_sizes(sizes: list[int], work: Path, timeout: float, drain: int) -> dict[str, list[dict[str, Any]]]:
    """``gloper submit extract`` of each size into its own database; a worker drains those of at
    most ``drain`` photos (its largest process's maximum resident memory)."""
    from gloper_jobs.testbed import services as qs
    from gloper_jobs.testbed.cluster import Cluster, drained

    redis = qs.start_redis()
    pg = qs.start_postgres()
    submits: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    try:
        for n in sizes:
            root = work / f"archive-{n}"
            if not root.exists():
                make_archive(root, n)
            url, _ = qs.create_database(pg.admin_url)
            cluster = Cluster(url, redis.url, work, extra_env={"GLOPER_PLUGINS": PLUGINS})
            cluster.gloper("db", "upgrade")
            row = {"photos": n, **measured(["submit", "extract", str(root), "--method", "noop", "--no-foreground"],
                                           cluster.env, work, timeout)}
            print(json.dumps({"submit": row}), flush=True)
            submits.append(row)
            if n <= drain:
                workers.append(_drain(cluster, _last_job(cluster), n, timeout, drained))
            import redis as redis_client

            redis_client.Redis.from_url(redis.url).flushall()
    finally:
        redis.remove()
        pg.stop()
    return {"submit": submits, "worker": workers}


def _last_job(cluster: Any) -> int:
    from gloper_jobs.store import repository as repo

    with cluster.store().session() as s:
        return repo.require_id(repo.get_job(s))


def _drain(cluster: Any, job_id: int, photos: int, timeout: float, drained: Any) -> dict[str, Any]:
    """One CPU worker until the job drains; the largest VmHWM of its processes, read from /proc
    just before it is stopped (the pool child's high-water mark dies with it)."""
    t0 = time.perf_counter()
    proc = cluster.start_worker("memory", "--concurrency", "1")
    try:
        cluster.wait_for(lambda: drained(cluster.store(), job_id), timeout, f"job {job_id}")
        peak = max(_vm_hwm_kb(pid) for pid in _tree(proc.pid))
    finally:
        cluster.stop()
    row = {"photos": photos, "max_rss_mb": round(peak / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"worker": row}), flush=True)
    return row


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def spread(rows: list[dict[str, Any]]) -> float:
    """Largest minus smallest maximum resident memory over the sizes (MB)."""
    values = [float(r["max_rss_mb"]) for r in rows]
    return round(max(values) - min(values), 1) if values else 0.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="archive sizes, comma-separated")
    ap.add_argument("--queue", action="store_true", help="also gloper submit extract and a worker")
    ap.add_argument("--drain-up-to", type=int, default=10_000,
                    help="with --queue, drain the archives of at most this many photos with a worker")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds any one command may take")
    ap.add_argument("--out", type=Path, default=OUT / "memory-scale.json")
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="memory-scale-") as tmp:
        work = Path(tmp)
        report: dict[str, Any] = {"run": run_sizes(sizes, work, args.timeout)}
        if args.queue:
            report.update(queue_sizes(sizes, work, args.timeout, args.drain_up_to))
    report["spread_mb"] = {k: spread(v) for k, v in report.items() if isinstance(v, list)}
    report["machine"] = {"processor": processor(), "cpus": os.cpu_count(),
                         "load_before": [round(x, 2) for x in load_before],
                         "load_after": [round(x, 2) for x in os.getloadavg()]}
    report["note"] = ("max_rss_mb: the kernel's maximum resident set of the command's process "
                      "(a worker: its largest process); photos are hard links of a 64x48 JPEG; "
                      "gloper run and the worker run the fake method noop without the foreground model")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["spread_mb"]))
    return report


if __name__ == "__main__":
    main()
