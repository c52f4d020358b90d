"""The review page at archive scale: a species page of a job of 10^5 photos, cold and warm.

    python -m bench.review_page [--photos 100000] [--species 4] [--out FILE.json]

Runs k-means over the example photos (real masks, photos from 252 px to 12 MP), then adds
``--photos`` fake finished items to that job straight into the store (each a copy of its
species' real item: same photo file, candidates and RLEs, its own id, so every picture is
made for it as for a photo of its own), records the calls over all of them, and serves
``gloper review`` in this process. For ``--species`` species (the 12 MP ones first) it times,
over HTTP with 6 connections as a browser opens them: the index, a species page's HTML,
its pictures with an empty cache (each photo read once, downscaled, then every candidate
drawn from its RLE) and again from the cache, pages 2 and the last; in headless Chromium
(when chromium and chromedriver are installed) the whole page as a person opens it
(navigation start to the load event, every picture in); and one click settling the species
with the smallest photos (the answer, then the re-pointing of its photos behind it). Writes JSON
(``bench/out/review-page.json`` unless ``--out``) with the machine and its load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert
from sqlmodel import col, select

from bench import OUT, examples, machine
from gloper_jobs.data.outputs import CHOICE_FILE
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.settings import Settings
from gloper_jobs.store import Candidate, Item, Job, Store

CONNECTIONS = 6  # what a browser opens to one host
CHUNK = 5000


def add_fakes(store: Store, job_id: int, n: int) -> dict[str, int]:
    """Insert ``n`` done items into job ``job_id``, cycling over its real items: each copies
    one's photo path, info, size, choice and candidates (RLEs), and gets a mask folder of its
    own, as a photo of an archive has, holding a copy of its ``choice.json`` (the chosen
    mask's path points there; re-pointing writes PNGs from the RLEs). Returns the photos
    per species."""
    with store.session() as s:
        real = s.exec(select(Item).where(Item.job_id == job_id).order_by(col(Item.id))).all()
        cands = s.exec(select(Candidate).where(col(Candidate.item_id).in_([r.id for r in real]))).all()
        next_id = int(s.exec(select(func.max(Item.id))).one() or 0) + 1
        next_cand = int(s.exec(select(func.max(Candidate.id))).one() or 0) + 1
    by_item: dict[int, list[Candidate]] = {}
    for c in cands:
        by_item.setdefault(c.item_id, []).append(c)
    skip = {"id", "rel_path", "image_id", "created_at", "started_at", "finished_at", "heartbeat_at", "queued_at",
            "lease_owner", "lease_expires_at"}
    counts: dict[str, int] = {}
    items: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []

    def flush() -> None:
        with store.session() as s:
            if items:
                s.execute(insert(Item), items)
            if rows:
                s.execute(insert(Candidate), rows)
        items.clear()
        rows.clear()

    chosen = {c.item_id: c for c in cands if c.is_choice and c.mask_path}
    for i in range(n):
        src = real[i % len(real)]
        item_id = next_id + i
        rel = f"{src.species}/fake-{i:06d}{Path(src.rel_path).suffix}"
        items.append({**src.model_dump(exclude=skip), "id": item_id, "rel_path": rel, "image_id": str(i)})
        counts[src.species] = counts.get(src.species, 0) + 1
        own = chosen.get(int(src.id or 0))
        folder = Path(own.mask_path).parent.parent.parent / rel if own else None
        if own is not None and folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(own.mask_path).parent / CHOICE_FILE, folder / CHOICE_FILE)
        for c in by_item.get(int(src.id or 0), []):
            path = str(folder / Path(c.mask_path).name) if c.is_choice and c.mask_path and folder else ""
            rows.append({**c.model_dump(exclude={"id", "item_id", "mask_path"}), "id": next_cand, "item_id": item_id,
                         "mask_path": path})
            next_cand += 1
        if len(items) >= CHUNK:
            flush()
    flush()
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.n_items += n
        s.add(job)
    return counts


class Client:
    """GETs on one server with ``CONNECTIONS`` keep-alive connections, the token in a cookie."""

    def __init__(self, port: int, cookie: str) -> None:
        self.port, self.cookie = port, cookie

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request("GET", path, headers={"Cookie": self.cookie})
            resp = c.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                c.close()

    def timed(self, path: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        status, body = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
        return time.perf_counter() - t0, body

    def pictures(self, html: bytes) -> tuple[float, int, int]:
        """Fetch every picture the page names, ``CONNECTIONS`` at a time; (seconds, count, bytes)."""
        srcs = sorted(set(re.findall(rb'<img[^>]+src="(/[^"]+)"', html)))
        t0 = time.perf_counter()

        def fetch(chunk: list[bytes]) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                total = 0
                for src in chunk:
                    status, body = self.get(src.decode().replace("&amp;", "&"), conn)
                    if status != 200:
                        raise RuntimeError(f"GET {src!r}: {status}")
                    total += len(body)
                return total
            finally:
                conn.close()

        chunks = [srcs[i::CONNECTIONS] for i in range(CONNECTIONS)]
        with ThreadPoolExecutor(CONNECTIONS) as pool:
            size = sum(pool.map(fetch, chunks))
        return time.perf_counter() - t0, len(srcs), size


def in_chromium(url: str, paths: list[str], profile: Path) -> dict[str, float] | None:
    """Navigation start to the load event (every picture in), ms, for each path; None without
    chromium and chromedriver."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    out: dict[str, float] = {}
    try:
        driver.get(url)
        base = url.split("/?")[0]
        for path in paths:
            driver.get(base + path)
            out[path] = float(driver.execute_script(
                "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"))
    finally:
        driver.quit()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--species", type=int, default=4, help="species pages timed (the largest photos first)")
    ap.add_argument("--out", type=Path, default=OUT / "review-page.json")
    args = ap.parse_args(argv)
    from gloper_jobs.jobs.polarity import decide_species_polarity
    from gloper_jobs.review import start_review

    work = Path(tempfile.mkdtemp(prefix="review-page-"))
    settings = Settings.from_env(database_url=f"sqlite:///{work / 'store.db'}", results_dir=work / "res", device="cpu")
    store = Store(settings.database_url)
    report: dict[str, Any] = {"machine": machine(), "load_before": [round(x, 2) for x in os.getloadavg()],
                              "photos": args.photos}
    t0 = time.perf_counter()
    base = run_dataset(examples(), "kmeans", settings, progress=False, store=store)
    job_id = int(base.job.id or 0)
    report["kmeans_10_photos_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    per_species = add_fakes(store, job_id, args.photos)
    report["insert_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        decide_species_polarity(s, job)
    report["decide_calls_s"] = round(time.perf_counter() - t0, 2)
    with store.session() as s:
        sizes = {it.species: (it.width or 0) * (it.height or 0) for it in s.exec(
            select(Item).where(Item.job_id == job_id, col(Item.id) <= len(per_species))).all()}
    species = sorted(per_species, key=lambda sp: -sizes.get(sp, 0))[:args.species]
    server = start_review(store, job_id, ["bench"], work / "cache", port=0)
    server.run_in_thread()
    client = Client(server.port, f"{server.review.cookie}={server.tokens['bench']}")
    try:
        index_s, _ = client.timed("/")
        report["index_s"] = round(index_s, 3)
        pages: dict[str, Any] = {}
        for sp in species:
            n = per_species[sp] + 1
            last = -(-n // server.review.per_page)
            entry: dict[str, Any] = {"photos": n, "photo_pixels": sizes.get(sp)}
            for label, page in (("page_1", 1), ("page_2", 2), ("last_page", last)):
                path = f"/species?name={sp}&page={page}"
                html_s, html = client.timed(path)
                cold_s, count, size = client.pictures(html)
                html_warm_s, html = client.timed(path)
                warm_s, _, _ = client.pictures(html)
                entry[label] = {"html_s": round(html_s, 3), "pictures": count, "picture_bytes": size,
                                "pictures_cold_s": round(cold_s, 3), "page_cold_s": round(html_s + cold_s, 3),
                                "html_warm_s": round(html_warm_s, 3), "pictures_warm_s": round(warm_s, 3),
                                "page_warm_s": round(html_warm_s + warm_s, 3)}
                print(sp, label, entry[label], flush=True)
            pages[sp] = entry
        report["species_pages"] = pages
        # as a person opens them: fresh pages (page 3, pictures not made yet), then again (cached)
        fresh = [f"/species?name={sp}&page=3" for sp in species]
        chrome = in_chromium(server.url("bench"), fresh, work / "profile")
        if chrome is not None:
            report["chromium_load_ms"] = {"cold": [round(chrome[p]) for p in fresh]}
            again = in_chromium(server.url("bench"), fresh, work / "profile2")
            report["chromium_load_ms"]["cached"] = [round(again[p]) for p in fresh] if again else None
            print("chromium", report["chromium_load_ms"], flush=True)
        report["pictures_made"] = server.review.cache.rendered
        # one click: the decision stored (its answer), then the species' photos re-pointed behind it
        clicked = min(per_species, key=lambda sp: sizes.get(sp, 0))  # the smallest photos: cheap PNGs
        form = f"token={server.tokens['bench']}&species={clicked}&pick=lighter%3Apolarity".encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        t0 = time.perf_counter()
        conn.request("POST", "/settle", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        status = conn.getresponse().status
        click_s = time.perf_counter() - t0
        conn.close()
        t0 = time.perf_counter()
        idle = server.review.repointer.wait(600)
        state = server.review.repointer.state()
        report["click"] = {"species": clicked, "status": status, "answer_s": round(click_s, 3),
                           "repoint_s": round(time.perf_counter() - t0, 2) if idle else None,
                           "repoint": state.get("result"), "error": state.get("error")}
        print("click", report["click"], flush=True)
    finally:
        server.close()
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    store.dispose()
    shutil.rmtree(work)
    return report


if __name__ == "__main__":
    main()
