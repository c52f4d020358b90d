"""An archive at night: photos/s of the whole pipeline with a dataset model, end to end.

    python -m bench.archive_throughput --photos N [--megapixels 12] [--queue] [--model M.pt]
        [--variant NAME:KEY=VALUE,...] --json OUT.json

Builds (or reuses, under ``bench/out/``) an unlabelled archive of N photos from the shared
examples: every other one re-encoded as a JPEG of ``--megapixels`` (4000 x 3000 at 12 MP,
what a camera writes), the rest as they are. Trains a dataset model on the ten examples with
``gloper train`` (cached) unless ``--model`` names one. Then, for each variant (``default``:
the settings as shipped; each ``--variant`` adds ``GLOPER_<KEY>=VALUE`` to the environment,
e.g. ``--variant legacy:DECODE=full,WRITE_CANDIDATES=all``; ``OMP_*`` keys are passed as they are), runs the archive with
``gloper run ARCHIVE --method gloper --param model=M`` in a fresh SQLite store and, with
``--queue``, through ``gloper submit`` and two CPU workers (``gloper worker --gpus cpu``) over
throwaway Redis and PostgreSQL. Writes per path: photos/s from the command's start (workers'
start included for the queue), failed items, and seconds per item of each stage from the
stored timings (decode, foreground, network, read-out, write) with ``record`` (whatever the
run spent outside the items: storing, scheduling, startup) as the remainder; plus the
machine, its load before and after, and 100,000 photos in hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench import OUT, machine
from bench import examples as default_examples
from gloper_jobs.data.datasets import scan_dataset

GLOPER = [sys.executable, "-m", "gloper_jobs.cli"]
STAGES = ("decode", "foreground", "network", "readout", "write")
ARCHIVE_SIZE = 100_000


def build_archive(root: Path, n: int, megapixels: float, examples: Path) -> Path:
    """``root`` holding ``n`` photos (flat, unlabelled); kept between runs."""
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    sources = sorted(it.path for it in scan_dataset(examples))
    for i in range(n):
        src = sources[i % len(sources)]
        if i % 2 == 0 and megapixels > 0:
            with Image.open(src) as img:
                rgb = img.convert("RGB")
            scale = (megapixels * 1e6 / (rgb.width * rgb.height)) ** 0.5
            size = (round(rgb.width * scale), round(rgb.height * scale))
            rgb.resize(size, Image.Resampling.BICUBIC).save(root / f"{i:06d}_{src.stem}.jpg", quality=90)
        else:
            shutil.copyfile(src, root / f"{i:06d}_{src.name}")
    done.touch()
    return root


def trained_model(examples: Path, path: Path) -> Path:
    """A dataset model trained by ``gloper train`` on the examples (default parameters), cached."""
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "GLOPER_DATABASE_URL": f"sqlite:///{tmp}/train.db"}
            subprocess.run([*GLOPER, "train", str(examples), "--out", str(path), "--no-progress"],
                           env=env, check=True)
    return path


def default_model_name() -> str:
    """The cache file of a model trained with `gloper train`'s defaults, named by them (a
    change of defaults trains a new one rather than reusing the old defaults' model)."""
    from gloper_jobs.methods.gloper.params import DatasetModelParams

    p = DatasetModelParams()
    sizes = "-".join(str(ls) for ls in p.local_sizes)
    return f"archive-model-s{p.size}-l{sizes}-b{p.batch}-{p.steps}.pt"


def stage_split(store_url: str, wall: float, lanes: int = 1) -> dict[str, Any]:
    """Items done/failed and mean seconds per item of each stage, from the stored timings.

    ``lanes``: items in flight at once (the embedded run's photos, the queue's workers);
    each stage's seconds are those of the thread or process that ran it, and ``record``
    is what the lanes spent outside the items (``wall x lanes / items`` less the stages)."""
    from gloper_jobs.store import Item, ItemStatus, Store

    store = Store(store_url)
    try:
        with store.session() as s:
            from sqlmodel import select

            rows = list(s.exec(select(Item)))
    finally:
        store.dispose()
    done = [r for r in rows if r.status == ItemStatus.done.value]
    failed = [r for r in rows if r.status == ItemStatus.failed.value]
    sums = dict.fromkeys(STAGES, 0.0)
    for r in done:
        t = {k: float(v) for k, v in dict((r.info or {}).get("timings") or {}).items()}
        network = t.get("network", float((r.info or {}).get("seconds", 0.0)))
        stage = {"decode": t.get("load", 0.0), "foreground": t.get("foreground", 0.0), "network": network,
                 "readout": t.get("segment", 0.0) - network, "write": t.get("write", 0.0)}
        for k in STAGES:
            sums[k] += stage[k]
    n = max(1, len(done))
    per = {k: round(v / n, 4) for k, v in sums.items()}
    per["record"] = round(max(0.0, wall * lanes / n - sum(per.values())), 4)
    return {"lanes": lanes, "done": len(done), "failed": len(failed), "errors": sorted({r.error or "" for r in failed})[:5],
            "seconds_per_item": per}


def summarise(wall: float, split: dict[str, Any]) -> dict[str, Any]:
    rate = split["done"] / wall if wall else 0.0
    return {"wall_s": round(wall, 2), "photos_per_s": round(rate, 3),
            "hours_for_100k": round(ARCHIVE_SIZE / rate / 3600, 1) if rate else None, **split}


def run_embedded(archive: Path, model: Path, env: dict[str, str], work: Path) -> dict[str, Any]:
    url = f"sqlite:///{work}/store.db"
    env = {**env, "GLOPER_DATABASE_URL": url, "GLOPER_RESULTS_DIR": str(work / "results")}
    t0 = time.perf_counter()
    proc = subprocess.run([*GLOPER, "run", str(archive), "--method", "gloper", "--param", f"model={model}",
                           "--no-progress"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):  # 1: some photos failed (counted below)
        raise SystemExit(f"gloper run exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    from gloper_jobs.jobs.runner import run_photos
    from gloper_jobs.settings import Settings

    lanes = run_photos(Settings.from_env(**({"run_photos": int(env["GLOPER_RUN_PHOTOS"])}
                                            if "GLOPER_RUN_PHOTOS" in env else {})))
    return summarise(wall, stage_split(url, wall, lanes))


def run_queue(archive: Path, model: Path, env: dict[str, str], work: Path, workers: int = 2) -> dict[str, Any]:
    from bench.services import job_id, services, wait_drained

    extra = {k: v for k, v in env.items() if k.startswith("GLOPER_")}
    with services(work, **extra) as cluster:
        t0 = time.perf_counter()
        for i in range(workers):
            cluster.start_worker(f"cpu{i + 1}", "--concurrency", "1")
        jid = job_id(cluster.gloper("submit", "extract", str(archive), "--method", "gloper", "--device-class", "cpu",
                                    "--param", f"model={model}").stdout)
        wait_drained(cluster, jid)
        wall = time.perf_counter() - t0
        return summarise(wall, stage_split(cluster.database_url, wall, workers))


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition(":")
    env = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        key = key.strip().upper()
        env[key if key.startswith("OMP_") else f"GLOPER_{key}"] = value.strip()
    return name, env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--megapixels", type=float, default=12.0, help="every other photo re-encoded at this size; 0: none")
    ap.add_argument("--archive", type=Path, default=None, help="an existing archive instead of building one")
    ap.add_argument("--model", type=Path, default=None, help="a `gloper train` checkpoint (default: train one, cached)")
    ap.add_argument("--queue", action="store_true", help="also run it through the queue with two CPU workers")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="also run with these GLOPER_ settings (repeatable); `default` always runs")
    ap.add_argument("--json", type=Path, default=OUT / "archive-throughput.json")
    args = ap.parse_args(argv)

    examples = default_examples()
    OUT.mkdir(parents=True, exist_ok=True)
    archive = args.archive.resolve() if args.archive else build_archive(OUT / f"archive-{args.photos}-{args.megapixels:g}mp", args.photos,
                                            args.megapixels, examples)
    model = args.model.resolve() if args.model else trained_model(examples, OUT / default_model_name())
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("GLOPER_")}
    variants = [("default", {}), *(parse_variant(v) for v in args.variant)]
    result: dict[str, Any] = {"machine": machine(), "photos": args.photos, "megapixels": args.megapixels,
                              "archive": str(archive), "model": str(model), "load_before": os.getloadavg(),
                              "variants": {}}
    for name, extra in variants:
        env = {**base_env, **extra}
        out: dict[str, Any] = {"settings": extra}
        with tempfile.TemporaryDirectory() as tmp:
            out["embedded"] = run_embedded(archive, model, env, Path(tmp))
            out["embedded"]["load"] = os.getloadavg()
        if args.queue:
            with tempfile.TemporaryDirectory() as tmp:
                out["queue"] = run_queue(archive, model, env, Path(tmp))
                out["queue"]["load"] = os.getloadavg()
        result["variants"][name] = out
        print(name, json.dumps(out), flush=True)
    result["load_after"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
