"""Export and report cost at 1,000 photos: file sizes and seconds per format.

    python -m bench.export_scale [--photos 1000] [--out FILE.json]

Runs k-means over the example photos once (real masks at the photos' own sizes),
then synthesises a job of ``--photos`` items whose store rows, RLEs and mask PNGs are
copies of those ten (cycled), and times ``gloper export`` in each format and
``gloper report --html``, with the machine and its load. Writes JSON
(``bench/out/export-scale.json`` unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import OUT, examples, machine
from gloper_jobs.exports import export_jobs
from gloper_jobs.jobs.candidates import CandidateRecord
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.reporting import write_html_report
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Candidate, Item


def synthesise(store: Store, source_job: int, n: int, results: Path) -> int:
    """A done job of ``n`` items copied (rows and PNGs) from ``source_job``'s items, cycled."""
    from gloper_jobs.data.datasets import DatasetItem

    with store.session() as s:
        pairs = repo.item_candidates(s, source_job)
        by_item: dict[int, tuple[Item, list[Candidate]]] = {}
        for it, c in pairs:
            by_item.setdefault(it.id or 0, (it, []))[1].append(c)
        sources = list(by_item.values())
        spec = repo.JobSpec(kind="extract", dataset=f"synthetic-{n}", method="kmeans", params={"copies": n},
                            profile=None, foreground_model="u2netp", eval_size=256, results_root=str(results))
        job, _ = repo.get_or_create_job(s, spec)
        items = [DatasetItem(f"{src.species}/{i:05d}-{Path(src.rel_path).name}", Path(src.path), src.species,
                             Path(src.label_path) if src.label_path else None, identity=f"id-{i % 37}",
                             image_id=str(i))
                 for i in range(n) for src, _ in [sources[i % len(sources)]]]
        repo.add_items(s, job, items)
        job_id = job.id or 0
        rows = repo.items_with_status(s, job_id, ["pending"])
        for i, row in enumerate(rows):
            src, cands = sources[int(row.image_id or 0) % len(sources)]
            folder = Path(job.results_dir) / row.rel_path
            folder.mkdir(parents=True, exist_ok=True)
            records = []
            for c in cands:
                dest = ""  # "": the mask is only its RLE (the default since masks stopped being PNGs)
                if c.mask_path:
                    dest = str(folder / Path(c.mask_path).name)
                    shutil.copyfile(c.mask_path, dest)
                records.append(CandidateRecord(c.name, dest, c.is_choice, c.derived, c.pattern_fraction,
                                               {"dice": c.dice or 0.0, "iou": c.iou or 0.0}, rle=c.rle))
            repo.record_success(s, row.id or 0, records, choice=src.choice or "", seconds=src.seconds or 0.0,
                                width=src.width or 0, height=src.height or 0,
                                foreground_fraction=src.foreground_fraction,
                                foreground_fallback=src.foreground_fallback, note=None, host=src.host,
                                device=src.device)
            if i % 200 == 0:
                s.flush()
    return job_id


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=OUT / "export-scale.json")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="export-scale-"))
    settings = Settings.from_env(database_url=f"sqlite:///{work / 'store.db'}", results_dir=work / "res", device="cpu")
    store = Store(settings.database_url)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    base = run_dataset(examples(), "kmeans", settings, progress=False, store=store)
    t_run = time.perf_counter() - t0
    t0 = time.perf_counter()
    job_id = synthesise(store, base.job.id or 0, args.photos, work / "res")
    t_synth = time.perf_counter() - t0
    masks = [p for p in (work / "res").rglob("*.png") if p.is_file() and f"job-{job_id:05d}" in str(p)]
    report: dict[str, object] = {
        "machine": machine(), "load_before": [round(x, 2) for x in load_before],
        "photos": args.photos, "mask_pngs": len(masks), "mask_png_bytes": sum(p.stat().st_size for p in masks),
        "kmeans_run_10_photos_s": round(t_run, 2), "synthesise_s": round(t_synth, 2), "formats": {},
    }
    formats: dict[str, dict[str, float]] = {}
    for fmt, name in (("parquet", "masks.parquet"), ("coco", "masks.json"), ("csv", "scores.csv")):
        with store.session() as s:
            res = export_jobs(s, [job_id], fmt, str(work / name))
        formats[fmt] = {"seconds": round(res.seconds, 2), "bytes": res.size, "rows": res.rows,
                        "ms_per_photo": round(1000 * res.seconds / args.photos, 2)}
        print(fmt, formats[fmt], flush=True)
    with store.session() as s:
        t0 = time.perf_counter()
        write_html_report(s, repo.get_job(s, job_id), work / "report.html")
        formats["html_report"] = {"seconds": round(time.perf_counter() - t0, 2),
                                  "bytes": (work / "report.html").stat().st_size}
    print("html", formats["html_report"])
    report["formats"] = formats
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    store.dispose()
    shutil.rmtree(work)
    return report


if __name__ == "__main__":
    main()
