"""Re-pointing an archive's photos to a person's call: seconds, and that a kill loses nothing.

    python -m bench.repoint_scale [--items 100000] [--side 320] [--species 10] [--kill-after 5]
        [--out FILE.json]

Builds an extract job of ``--items`` done photos the way a run leaves it: the job and its
items recorded by ``KINDS["extract"].record`` over a folder of hard links to one JPEG of
``--side`` x ``3/4 side`` pixels, each item's outcome from the fast fake method
``kmeans`` (k=2) on that photo recorded with ``record_success`` and its ``choice.json``
written beside the darker mask, as the pipeline does (the method runs once: its outcome is
the same for every link). Then a person settles every species ``lighter`` and the
re-point runs in a child process that is SIGKILLed after ``--kill-after`` seconds; the
same step is started again and must finish: every item chooses ``cluster_1`` in the
store, exactly one candidate is marked chosen, ``choice.json`` names it and its PNG exists
at the photo's size. Reports the seconds of each part (wall clock from each command's
start) and the items per second.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import machine
from bench.quality import write_report


def build(root: Path, n: int, side: int, species: int, db: str) -> tuple[int, dict[str, float]]:
    """The folder, the store and the job of ``n`` done items; returns the job id and seconds."""
    import numpy as np
    from PIL import Image
    from sqlmodel import col, select, update

    from gloper_jobs.data.outputs import write_choice
    from gloper_jobs.data.synthetic import make_photo
    from gloper_jobs.jobs.kinds import KINDS, SubmitRequest
    from gloper_jobs.jobs.pipeline import process_photo
    from gloper_jobs.methods.registry import build_segmenter
    from gloper_jobs.settings import Settings
    from gloper_jobs.store import Item, Job, Store
    from gloper_jobs.store import repository as repo
    from gloper_jobs.store.models import JobStatus

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    photos = root / "photos"
    photo, _, _ = make_photo("Spots", side * 3 // 4, np.random.default_rng(1), lighter=True)
    first = photos / "Sp0" / "p0.jpg"
    first.parent.mkdir(parents=True)
    Image.fromarray(photo).save(first, quality=90)
    sources = {0: first}  # one file a species: a file takes at most 65,000 hard links (ext4)
    for i in range(1, n):
        sp = i % species
        folder = photos / f"Sp{sp}"
        if sp not in sources:
            folder.mkdir()
            sources[sp] = folder / f"p{i}.jpg"
            sources[sp].write_bytes(first.read_bytes())
            continue
        os.link(sources[sp], folder / f"p{i}.jpg")
    t["links"] = time.perf_counter() - t0
    settings = Settings.from_env(database_url=db, results_dir=root / "results", device="cpu")
    store = Store(settings.database_url)
    sub = KINDS["extract"].record(store, settings, SubmitRequest(photos, "kmeans", foreground=False))
    job_id = repo.require_id(sub.job)
    t["record"] = time.perf_counter() - t0 - t["links"]
    segmenter = build_segmenter("kmeans", settings, None, {})
    out = process_photo(first, segmenter, root / "once", None)  # the fake method, run once
    t1 = time.perf_counter()
    with store.session() as s:
        job = repo.get_job(s, job_id)
        results = Path(job.results_dir)
        ids = s.exec(select(Item.id, Item.rel_path).where(Item.job_id == job_id)).all()
    png = (root / "once" / f"{out.choice}.png").read_bytes()
    for start in range(0, len(ids), 2000):
        with store.session() as s:
            for item_id, rel in ids[start:start + 2000]:
                folder = results / rel
                folder.mkdir(parents=True, exist_ok=True)
                recs = [replace(c, mask_path=str(folder / f"{c.name}.png") if c.mask_path else "")
                        for c in out.candidates]
                (folder / f"{out.choice}.png").write_bytes(png)
                write_choice(folder, out.choice, recs)
                repo.record_success(s, int(item_id or 0), recs, choice=out.choice, seconds=out.seconds, width=out.width,
                                    height=out.height, foreground_fraction=None, foreground_fallback=None,
                                    note=None, host="bench", device="cpu", info=out.info)
    with store.session() as s:  # the job as its last item left it: drained
        s.execute(update(Job).where(col(Job.id) == job_id).values(status=JobStatus.done.value))
    t["items"] = time.perf_counter() - t1
    return job_id, t


def _repoint(db: str, job_id: int) -> None:
    from gloper_jobs.jobs.repointing import repoint
    from gloper_jobs.store import Store

    repoint(Store(db), job_id)


def check(db: str, job_id: int) -> dict[str, Any]:
    """Every item's choice, chosen candidate, choice.json and PNG agree with the call."""
    from PIL import Image
    from sqlmodel import col, func, select

    from gloper_jobs.store import Candidate, Item, Store

    store = Store(db)
    bad: list[str] = []
    with store.session() as s:
        wrong = s.exec(select(func.count()).select_from(Item).where(Item.job_id == job_id,
                                                                    Item.choice != "cluster_1")).one()
        chosen = s.exec(select(func.count()).select_from(Candidate).join(Item, col(Candidate.item_id) == col(Item.id))
                        .where(Item.job_id == job_id, col(Candidate.is_choice))).one()
        n = s.exec(select(func.count()).select_from(Item).where(Item.job_id == job_id)).one()
        sample = s.exec(select(Candidate.mask_path, Item.width, Item.height)
                        .join(Item, col(Candidate.item_id) == col(Item.id))
                        .where(Item.job_id == job_id, col(Candidate.is_choice))
                        .order_by(func.random()).limit(200)).all()
    for mask_path, w, h in sample:
        doc = json.loads((Path(mask_path).parent / "choice.json").read_text())
        if doc["choice"] != "cluster_1":
            bad.append(f"{mask_path}: choice.json names {doc['choice']}")
        with Image.open(mask_path) as im:
            if im.size != (w, h):
                bad.append(f"{mask_path}: {im.size} != {(w, h)}")
    return {"items": n, "not_repointed": wrong, "chosen_rows": chosen, "sampled_files_bad": bad}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--side", type=int, default=320, help="photo width (height 3/4 of it)")
    ap.add_argument("--species", type=int, default=10)
    ap.add_argument("--kill-after", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    from gloper_jobs.jobs.polarity import decide_species_polarity
    from gloper_jobs.jobs.repointing import pending, repoint
    from gloper_jobs.store import Job, Store

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-repoint-") as tmp:
        root = Path(tmp)
        db = f"sqlite:///{root / 'store.db'}"
        job_id, t = build(root, args.items, args.side, args.species, db)
        store = Store(db)
        t0 = time.perf_counter()
        with store.session() as s:  # the drain: the calls recorded, nothing re-pointed yet
            job = s.get(Job, job_id)
            assert job is not None
            species = sorted({f"Sp{i}" for i in range(min(args.species, args.items))})
            decide_species_polarity(s, job, dict.fromkeys(species, "lighter"), who="bench")
        t["decide"] = time.perf_counter() - t0
        child = mp.get_context("spawn").Process(target=_repoint, args=(db, job_id))
        t0 = time.perf_counter()
        child.start()
        child.join(args.kill_after)
        killed = child.is_alive()
        if killed and child.pid:
            os.kill(child.pid, signal.SIGKILL)
            child.join()
        t["until_kill"] = time.perf_counter() - t0
        with store.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            after_kill = {"pending": pending(job), "items_done": job.species_polarity["repoint"]["items"]}  # type: ignore[index]
        t0 = time.perf_counter()
        resumed = repoint(store, job_id)
        t["resume"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = repoint(store, job_id)
        t["nothing_left"] = time.perf_counter() - t0
        verdict = check(db, job_id)
    ok = (verdict["not_repointed"] == 0 and verdict["chosen_rows"] == args.items and not verdict["sampled_files_bad"]
          and resumed.finished and again.repointed == 0)
    report: dict[str, Any] = {
        "machine": machine(), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "items": args.items,
        "photo": f"{args.side} x {args.side * 3 // 4}", "species": args.species, "killed": killed,
        "after_kill": after_kill, "resumed": resumed.__dict__, "again_repointed": again.repointed,
        "seconds": {k: round(v, 2) for k, v in t.items()},
        "repoint_items_per_s": round(args.items / (t["until_kill"] + t["resume"]), 1), "check": verdict, "ok": ok,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "resumed"}, indent=1))
    write_report(report, args.out, "repoint-scale")
    if not ok:
        raise SystemExit("re-point check failed: " + json.dumps(verdict))
    return report


if __name__ == "__main__":
    main()
