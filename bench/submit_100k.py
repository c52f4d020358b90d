"""Submission of 100,000 photos (synthetic, empty files: the scan never opens them) through
`gloper submit` into PostgreSQL and Redis, then the same submission again.
Writes bench/out/submit_100k.json.

    python -m bench.submit_100k [--items 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.services import services, write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "archive"
        per_folder = 1000
        t0 = time.perf_counter()
        for i in range(args.items):
            folder = root / f"Species{i // (args.items // 10 or 1):02d}" / f"roll{(i // per_folder):04d}"
            if i % per_folder == 0 or not folder.exists():
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:07d}.jpg").touch()
        make_s = time.perf_counter() - t0
        with services(work) as cluster:
            t0 = time.perf_counter()
            first = cluster.gloper("submit", "extract", str(root), "-m", "kmeans", "--no-foreground", timeout=600)
            first_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = cluster.gloper("submit", "extract", str(root), "-m", "kmeans", "--no-foreground", timeout=600)
            again_s = time.perf_counter() - t0
            import redis

            queued = redis.Redis.from_url(cluster.broker_url).llen("extract.cpu")
    write("submit_100k", {
        "items": args.items, "making_files_seconds": round(make_s, 1),
        "first_submit_seconds": round(first_s, 2), "first_submit_output": first.stdout.splitlines()[0],
        "second_submit_seconds": round(again_s, 2), "second_submit_output": again.stdout.splitlines()[0],
        "messages_in_redis": queued,
        "note": "wall time of the whole `gloper submit` process (Python start-up included): scan, "
                "job and item rows in PostgreSQL, publishing to Redis in batches",
    })


if __name__ == "__main__":
    main()
