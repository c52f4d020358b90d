"""Queue overhead: a no-op method through submit, Redis, 2 CPU workers and PostgreSQL,
against calling process_photo in a loop. Writes bench/out/queue_overhead.json.

    python -m bench.queue_overhead [--items 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.services import job_id, services, wait_drained, write


def make_photos(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "Noise").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "Noise" / f"{i:05d}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=300)
    args = ap.parse_args()
    import gloper_jobs.testbed.fake_methods  # noqa: F401 - registers "noop"
    from gloper_jobs.jobs.pipeline import process_photo
    from gloper_jobs.methods.registry import create_segmenter

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = make_photos(work / "photos", args.items)
        seg = create_segmenter("noop")
        files = sorted((photos / "Noise").iterdir())
        t0 = time.perf_counter()
        for f in files:
            process_photo(f, seg, work / "loop" / f.name, None)
        loop_s = time.perf_counter() - t0

        with services(work, GLOPER_PLUGINS="gloper_jobs.testbed.fake_methods") as cluster:
            cluster.start_worker("cpu1")
            cluster.start_worker("cpu2")
            # Wait until both workers are up (their first item is a warm-up job of one photo).
            warm = work / "warm" / "W"
            warm.mkdir(parents=True)
            (warm / "w.png").write_bytes(files[0].read_bytes())
            wait_drained(cluster, job_id(cluster.gloper("submit", "extract", str(warm.parent), "-m", "noop",
                                                        "--no-foreground").stdout), 600)
            time.sleep(3)
            t0 = time.perf_counter()
            out = cluster.gloper("submit", "extract", str(photos), "-m", "noop", "--no-foreground")
            submit_s = time.perf_counter() - t0
            drain_s = wait_drained(cluster, job_id(out.stdout))
            queue_s = submit_s + drain_s
    write("queue_overhead", {
        "items": args.items, "photo": "64x64 PNG, no foreground, method noop",
        "loop": {"seconds": round(loop_s, 3), "items_per_s": round(args.items / loop_s, 1),
                 "ms_per_item": round(1000 * loop_s / args.items, 2)},
        "queue_2_cpu_workers": {"submit_seconds": round(submit_s, 3), "drain_seconds": round(drain_s, 3),
                                "items_per_s": round(args.items / queue_s, 1),
                                "drain_items_per_s": round(args.items / drain_s, 1),
                                "ms_per_item": round(1000 * queue_s / args.items, 2)},
        "overhead_ms_per_item": round(1000 * (queue_s - loop_s) / args.items, 2),
        "note": "queue timing from `gloper submit` to the last item recorded in PostgreSQL; the "
                "status poll interval (0.5 s) bounds the resolution",
    })


if __name__ == "__main__":
    main()
