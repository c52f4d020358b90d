"""Scaling: 1 vs 2 CPU workers (`gloper worker --gpus cpu`, one torch thread each) on k-means
over the example photos. Writes bench/out/scaling.json.

    python -m bench.scaling [--repeat 3]

The dataset is the example photos copied ``--repeat`` times (separate folders, so
separate items). Timing starts when both workers are up (after a warm-up job).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench import examples
from bench.services import job_id, services, wait_drained, write


def run(n_workers: int, dataset: Path, work: Path) -> float:
    with services(work / f"w{n_workers}") as cluster:
        (work / f"w{n_workers}").mkdir(exist_ok=True)
        for k in range(n_workers):
            cluster.start_worker(f"cpu{k + 1}")
        warm = work / f"warm{n_workers}" / "Cat"
        warm.mkdir(parents=True)
        for k in range(n_workers):
            shutil.copy(next((examples() / "Cat").glob("*.JPG")), warm / f"{k}.jpg")
        wait_drained(cluster, job_id(cluster.gloper("submit", "extract", str(warm.parent), "-m", "kmeans").stdout),
                     900)
        time.sleep(2)
        t0 = time.perf_counter()
        job = job_id(cluster.gloper("submit", "extract", str(dataset), "-m", "kmeans").stdout)
        wait_drained(cluster, job)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = work / "photos"
        for r in range(args.repeat):
            shutil.copytree(examples(), dataset / f"copy{r}", ignore=shutil.ignore_patterns("README*"))
        n = sum(1 for p in dataset.rglob("*") if p.is_file() and p.parent.name not in ("label", "labels"))
        one = run(1, dataset, work)
        two = run(2, dataset, work)
    write("scaling", {
        "photos": n, "method": "kmeans (cpu profile), rembg u2netp foreground", "torch_threads_per_worker": 1,
        "one_worker": {"seconds": round(one, 1), "photos_per_hour": round(3600 * n / one)},
        "two_workers": {"seconds": round(two, 1), "photos_per_hour": round(3600 * n / two)},
        "speedup": round(one / two, 2),
        "note": "on a 2-core machine shared with other work; includes `gloper submit` (~5 s start-up)",
    })


if __name__ == "__main__":
    main()
