"""gloper report JOB --html: one self-contained page, rendered by a real headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.outputs_helpers import cli_env, copy_unlabelled, gloper

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SPECIES = ["Cat", "Pandas", "Tiger", "Zebra"]


def chromium(page: Path, tmp: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium)")
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={tmp / 'profile'}",
         "--hide-scrollbars", "--window-size=1280,2000", *mode, page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, examples_dir: Path) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("report")
    labelled = folder / "labelled"
    for sp in SPECIES:
        shutil.copytree(examples_dir / sp, labelled / sp)
    (labelled / "Zebra" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    unlabelled = copy_unlabelled(examples_dir, folder / "unlabelled", 3)
    env = {**cli_env(folder, models_dir), "FOLDER": str(folder)}
    for root in (labelled, unlabelled):
        r = gloper("run", str(root), "--method", "kmeans", "--no-progress", env=env)
        assert r.returncode == 0, r.stderr
    return env


def _render(env: dict[str, str], job: str, tmp_path: Path) -> tuple[str, str, np.ndarray]:
    page = tmp_path / f"job{job}.html"
    r = gloper("report", job, "--html", str(page), env=env)
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    # self-contained: every image inline, nothing fetched from elsewhere
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "http://" not in html and "https://" not in html
    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    shot = tmp_path / f"job{job}.png"
    r2 = chromium(page, tmp_path, f"--screenshot={shot}")
    assert r2.returncode == 0 and shot.is_file(), r2.stderr
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    return html, dom.stdout, pixels


def _not_blank(pixels: np.ndarray) -> None:
    assert pixels.shape[0] >= 1000 and pixels.std() > 20  # text, tables, photos: far from a flat page
    assert (pixels < 128).mean() > 0.01  # dark pixels: text and photos were drawn


def test_labelled_job_page(jobs: dict[str, str], tmp_path: Path) -> None:
    html, dom, pixels = _render(jobs, "1", tmp_path)
    _not_blank(pixels)
    text = re.sub(r"<[^>]+>", " ", dom)
    for expected in ("Dice per species", "oracle Dice", "label-free Dice", "ALL", *SPECIES, "Dice distribution",
                     "Best photos", "Worst photos", "Failed photos (1)", "Zebra/broken.jpg", "cluster_0",
                     "hostname", "per photo (mean)", "torch"):
        if expected == "hostname":
            import socket

            expected = socket.gethostname()
        assert expected in text, expected
    assert re.search(r"ALL\s+\d+\s+0\.\d{3}\s+0\.\d{3}", text)
    # four finished labelled photos: the two best and the two worst, each shown once
    assert 'id="plot"' in html and html.count('class="card"') == 4
    best = text.index("Best photos")
    worst = text.index("Worst photos")
    assert best < worst < text.index("Failed photos")
    assert "cannot be read" in text or "broken.jpg:" in text
    # the polarity table: every species' photo in both readings, large enough to judge a coat
    section = html[html.index('id="polarity-table"'):]
    section = section[:section.index("</table>")]
    rows = section.split("<tr>")[2:]
    assert len(rows) == len(SPECIES)
    for row in rows:
        pictures = re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', row)
        assert len(pictures) == 2 and "darker: cluster_0" in row and "lighter: cluster_1" in row, row[:300]
        assert "default" in row or "person" in row or "calibration" in row
        sizes = {Image.open(io.BytesIO(base64.b64decode(p))).size for p in pictures}
        assert len(sizes) == 1 and 240 <= max(next(iter(sizes))) <= 280  # 280 px, or the photo's own (Pandas: 252)
        a, b = (np.asarray(Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB"), dtype=np.float32)
                for p in pictures)
        assert np.abs(a - b).mean() > 5  # two different readings, not one picture twice


def test_unlabelled_job_lists_its_photos(jobs: dict[str, str], tmp_path: Path) -> None:
    html, dom, pixels = _render(jobs, "2", tmp_path)
    _not_blank(pixels)
    text = re.sub(r"<[^>]+>", " ", dom)
    assert "nothing to score" not in text and "Dice per species" not in text
    assert "A sample of the photos" in text and "Pattern fraction distribution" in text
    photos = sorted(p.relative_to(Path(jobs["FOLDER"]) / "unlabelled").as_posix()
                    for p in (Path(jobs["FOLDER"]) / "unlabelled").rglob("*") if p.is_file())
    assert len(photos) == 3
    for rel in photos:
        assert rel in text
    assert html.count('class="card"') == 3
    # the text report lists the photos too, not only "(no labelled photos: nothing to score)"
    r = gloper("report", "2", env=jobs)
    assert r.returncode == 0 and "photos (3 finished" in r.stdout
    assert all(rel in r.stdout for rel in photos)
