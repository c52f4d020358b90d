"""`gloper review`: settling a species in a real browser (headless Chromium, selenium), the
token check, two people deciding at once, the picture cache and the photo sample.

Two real jobs on the synthetic set in both polarities (no foreground, for speed): k-means and
per-photo GloPER with tiny settings, plus a species whose name is markup, to check escaping.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlmodel import col, select

from gloper_jobs.data.outputs import candidate_mask, read_mask
from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.review.sampling import page_count, page_positions
from gloper_jobs.settings import Settings
from gloper_jobs.store import Candidate, Item, Job, Store
from tests.browser import ReviewProcess, chromium

TINY = {"size": "32", "local_sizes": "4,8", "steps": "4"}
MARKUP = '<img src=x onerror=alert(1)> & "co"'  # a folder name: no "/"


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("review")
    photos = folder / "photos"
    make_dataset(photos, per_species=2, size=96, polarity="both")
    shutil.copytree(photos / "Spots", photos / MARKUP)
    settings = Settings.from_env(database_url=f"sqlite:///{folder / 'store.db'}", results_dir=folder / "res",
                                 device="cpu")
    store = Store(settings.database_url)
    km = run_dataset(photos, "kmeans", settings, foreground=False, progress=False, store=store)
    gl = run_dataset(photos, "gloper", settings, None, dict(TINY), foreground=False, progress=False, store=store)
    from gloper_jobs.jobs.repointing import repoint

    for job in (km.job, gl.job):  # the photos follow the drain's calls (the runner's last step: a no-op here)
        assert repoint(store, int(job.id or 0)).finished
    env = {"GLOPER_DATABASE_URL": settings.database_url, "GLOPER_RESULTS_DIR": str(folder / "res"),
           "GLOPER_REVIEW_CACHE_DIR": str(folder / "cache"), "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": "1"}
    return {"store": store, "kmeans": km.job.id, "gloper": gl.job.id, "env": env, "folder": folder,
            "settings": settings}


def _data(store: Store, job_id: int) -> dict[str, Any]:
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return dict(job.species_polarity or {})


def _wait_repointed(store: Store, job_id: int, timeout: float = 60) -> dict[str, Any]:
    """The job's polarity data once its re-pointing is done for the latest decision."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = _data(store, job_id)
        rp = data.get("repoint", {})
        if rp.get("state") == "done" and rp.get("version") == data.get("version"):
            return data
        time.sleep(0.2)
    raise AssertionError(f"re-pointing did not finish: {_data(store, job_id).get('repoint')}")


def _choices(store: Store, job_id: int, species: str) -> dict[str, tuple[Item, Candidate]]:
    with store.session() as s:
        rows = s.exec(select(Item, Candidate).join(Candidate, col(Candidate.item_id) == col(Item.id))
                      .where(Item.job_id == job_id, Item.species == species, col(Candidate.is_choice))).all()
    return {item.rel_path: (item, cand) for item, cand in rows}


def _click(driver: Any, value: str) -> None:
    """Click the settle button ``value`` and wait for the page the decision leads to."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, f'button[name="pick"][value="{value}"]').click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.ID, "settled"))


def _images_loaded(driver: Any) -> list[bool]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0);")


def test_a_click_settles_a_species_repoints_its_masks_and_the_export(jobs: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    store, job_id = jobs["store"], jobs["gloper"]
    before = {sp: _choices(store, job_id, sp) for sp in ("Stripes", "StripesLight")}
    server = ReviewProcess(job_id, ["alice"], jobs["env"])
    try:
        with chromium(tmp_path / "profile") as driver:
            driver.get(server.urls["alice"])
            assert "token=" not in driver.current_url  # moved into a cookie
            rows = driver.find_elements(By.CSS_SELECTOR, "#queue tr[data-species]")
            assert len(rows) == 9  # 8 synthetic species and the one named with markup
            # the markup is text: the link shows it literally and makes no <img> element
            link = next(a for a in driver.find_elements(By.CSS_SELECTOR, "#queue a") if a.text == MARKUP)
            assert not driver.find_elements(By.CSS_SELECTOR, "#queue img")
            link.click()
            assert driver.find_element(By.ID, "species").text == MARKUP
            assert not driver.find_elements(By.CSS_SELECTOR, "h1 img, .path img")

            driver.get(f"{server.base}/species?name=StripesLight")
            heads = [h.text.split("\n")[0] for h in driver.find_elements(By.CSS_SELECTOR, "#photos th")]
            assert heads == ["photo", "consensus", "fused", "local_4", "local_8"]
            loaded = _images_loaded(driver)  # 2 photos: the photo and 4 masks x 2 readings each
            assert len(loaded) == 2 * 9 and all(loaded), loaded
            t0 = datetime.now(UTC) - timedelta(seconds=2)
            _click(driver, "lighter:local_8")
            banner = driver.find_element(By.ID, "settled").text
            assert "StripesLight: settled lighter · local_8 by alice" in banner
            assert "species?name=" in driver.current_url and "StripesLight" not in driver.find_element(By.ID, "species").text
            data = _wait_repointed(store, job_id)
            driver.get(server.base + "/")
            assert "re-pointed" in driver.find_element(By.ID, "repoint").text
    finally:
        server.stop()
    call = data["calls"]["StripesLight"]
    assert (call["polarity"], call["mask"], call["how"], call["by"]) == ("lighter", "local_8", "person", "alice")
    assert t0 <= datetime.fromisoformat(call["at"]) <= datetime.now(UTC)
    assert data["decisions"]["StripesLight"][-1]["by"] == "alice"
    after = _choices(store, job_id, "StripesLight")
    assert len(after) == 2
    for rel, (item, cand) in after.items():
        assert cand.name == item.choice == "local_8_lighter", rel
        # the new choice's full-resolution PNG, written from its stored RLE, and choice.json naming it
        png = Path(cand.mask_path)
        assert png.is_file() and png.name == "local_8_lighter.png"
        assert np.array_equal(read_mask(png), candidate_mask("", cand.rle, (item.height, item.width)))
        doc = json.loads((png.parent / "choice.json").read_text())
        assert doc["choice"] == "local_8_lighter" and doc["mask"] == "local_8_lighter.png"
        assert before["StripesLight"][rel][1].name != "local_8_lighter"
    assert {r: c.name for r, (_, c) in _choices(store, job_id, "Stripes").items()} == {
        r: c.name for r, (_, c) in before["Stripes"].items()}  # another species is left alone
    from gloper_jobs.exports import export_jobs

    out = tmp_path / "masks.parquet"
    with store.session() as s:
        export_jobs(s, [job_id], "parquet", str(out))
    table = pd.read_parquet(out)
    assert set(table[table.species == "StripesLight"].choice) == {"local_8_lighter"}


def _request(url: str, data: bytes | None = None, cookie: str | None = None) -> int:
    """The status of one request (redirects not followed), a POST when ``data`` is given."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    headers = {"Cookie": cookie} if cookie else {}
    if data is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request("POST" if data is not None else "GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                     body=data, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_without_the_token_nothing_is_shown_or_decided(jobs: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    store, job_id = jobs["store"], jobs["kmeans"]
    server = ReviewProcess(job_id, ["alice"], jobs["env"])
    try:
        base, token = server.base, server.urls["alice"].split("token=")[1]
        with store.session() as s:
            item = s.exec(select(Item).where(Item.job_id == job_id)).first()
            assert item is not None
        for path in ("/", "/species?name=Spots", f"/photo/{item.id}", f"/reading/{item.id}/cluster_0", "/status"):
            assert _request(base + path) == 401, path
            assert _request(base + path + ("&" if "?" in path else "?") + "token=wrong") == 403, path
        assert _request(f"{base}/species?name=Spots&token={token}") == 303  # to the cookie
        cookie = f"gloper_review_{base.rsplit(':', 1)[1]}={token}"
        assert _request(f"{base}/species?name=Spots", cookie=cookie) == 200
        assert _request(f"{base}/photo/{item.id}", cookie=cookie) == 200
        # a path in the URL is never a file: only the store's candidates of the job's items
        assert _request(f"{base}/reading/{item.id}/..%2F..%2Fstore.db", cookie=cookie) == 404
        assert _request(f"{base}/photo/{10**6}", cookie=cookie) == 404
        # a POST needs the token in the form: the cookie alone (another site's form) is refused
        form = b"species=Spots&pick=lighter%3Apolarity"
        assert _request(f"{base}/settle", form, cookie=cookie) == 403
        assert _request(f"{base}/settle", form + b"&token=wrong", cookie=cookie) == 403
        assert _request(f"{base}/calibration", b"", cookie=cookie) == 403
        assert "decisions" not in _data(store, job_id) or not _data(store, job_id)["decisions"]
        with chromium(tmp_path / "profile") as driver:
            driver.get(base + "/")
            assert "needs its token" in driver.find_element(By.TAG_NAME, "body").text
            driver.get(f"{base}/?token=wrong")
            assert "wrong token" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        server.stop()


def test_two_people_deciding_at_once_the_later_wins_and_both_are_kept(jobs: dict[str, Any], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    store, job_id = jobs["store"], jobs["kmeans"]
    server = ReviewProcess(job_id, ["alice", "bob"], jobs["env"])
    try:
        with chromium(tmp_path / "a") as alice, chromium(tmp_path / "b") as bob:
            for who, driver in (("alice", alice), ("bob", bob)):
                driver.get(server.urls[who])
                driver.get(f"{server.base}/species?name=Spots")
            clicks = [threading.Thread(target=_click, args=(alice, "lighter:polarity")),
                      threading.Thread(target=_click, args=(bob, "darker:polarity"))]
            for t in clicks:
                t.start()
            for t in clicks:
                t.join(60)
            data = _wait_repointed(store, job_id)
            history = data["decisions"]["Spots"]
            assert sorted(d["by"] for d in history) == ["alice", "bob"]
            call = data["calls"]["Spots"]
            assert (call["polarity"], call["by"]) == (history[-1]["polarity"], history[-1]["by"])
            # one after the other: the later one is the call
            for driver, value in ((alice, "lighter:polarity"), (bob, "darker:polarity")):
                driver.get(f"{server.base}/species?name=Spots")
                _click(driver, value)
                assert "Spots: settled" in driver.find_element(By.ID, "settled").text
            data = _wait_repointed(store, job_id)
            assert [d["by"] for d in data["decisions"]["Spots"]][-2:] == ["alice", "bob"]
            assert len(data["decisions"]["Spots"]) == 4
            assert (data["calls"]["Spots"]["polarity"], data["calls"]["Spots"]["by"]) == ("darker", "bob")
            assert {c.name for _, c in _choices(store, job_id, "Spots").values()} == {"cluster_0"}
            # the decisions saved as a calibration for later jobs
            alice.get(server.base + "/")
            alice.find_element(By.ID, "save-calibration").click()
            from selenium.webdriver.support.ui import WebDriverWait

            # the click posts the form and a new page answers: wait for it, not for a fixed time
            WebDriverWait(alice, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#calibration b"))
            saved = int(alice.find_element(By.CSS_SELECTOR, "#calibration b").text)
            assert f"--settings-from {saved}" in alice.find_element(By.ID, "calibration").text
    finally:
        server.stop()
    from gloper_jobs.jobs.calibration import calibration_of

    with store.session() as s:
        assert calibration_of(s, saved, "kmeans")["Spots"]["polarity"] == "darker"


def test_pictures_are_made_once_and_served_from_the_cache(jobs: dict[str, Any], tmp_path: Path) -> None:
    from gloper_jobs.review import start_review

    store, job_id = jobs["store"], jobs["kmeans"]
    with store.session() as s:
        item = s.exec(select(Item).where(Item.job_id == job_id, Item.species == "Patches")).first()
        assert item is not None
    server = start_review(store, job_id, ["test"], tmp_path / "cache", port=0)
    server.run_in_thread()
    try:
        base, cache = f"http://127.0.0.1:{server.port}", server.review.cache
        cookie = f"{server.review.cookie}={server.tokens['test']}"
        assert _request(f"{base}/reading/{item.id}/cluster_1", cookie=cookie) == 200
        assert cache.rendered == 2  # the downscaled photo once, then the mask over it
        files = {p: p.stat().st_mtime_ns for p in cache.folder.rglob("*.jpg")}
        assert _request(f"{base}/reading/{item.id}/cluster_0", cookie=cookie) == 200
        assert cache.rendered == 3  # the photo was not read again
        moved = Path(item.path).with_suffix(".away")
        Path(item.path).rename(moved)
        try:  # with the photo gone, every picture already made is still served, none made again
            for path in (f"/reading/{item.id}/cluster_1", f"/reading/{item.id}/cluster_0", f"/photo/{item.id}"):
                assert _request(base + path, cookie=cookie) == 200, path
            assert cache.rendered == 3
            assert all(p.stat().st_mtime_ns == t for p, t in files.items())
        finally:
            moved.rename(item.path)
        with urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - loopback
                f"{base}/reading/{item.id}/cluster_1", headers={"Cookie": cookie}), timeout=30) as resp:
            from PIL import Image

            img = Image.open(resp)
            assert img.format == "JPEG" and max(img.size) <= cache.side  # never the full-resolution photo
    finally:
        server.close()


def test_a_page_is_spread_over_the_species_and_every_photo_comes_once() -> None:
    n, k = 1000, 8
    first = page_positions(n, k, 1)
    assert first == [62, 187, 312, 437, 562, 687, 812, 937]  # the middle of each eighth, not the first 8
    pages = [page_positions(n, k, p) for p in range(1, page_count(n, k) + 1)]
    assert sorted(i for p in pages for i in p) == list(range(n))
    for p in pages[:8]:  # every early page spans the species, one photo per eighth
        assert len(p) == k and [i * k // n for i in p] == list(range(k))
    assert page_positions(n, k, 2) == page_positions(n, k, 2) and page_positions(n, k, 126) == []
    assert page_positions(5, k, 1) == [0, 1, 2, 3, 4]
