"""What a run noticed is counted and named, with how to fix it, in `gloper run`'s output and in
`gloper report`: a symlink out of the archive, an unreadable label, a label of another shape
(not scored), a folder of otherwise good photos (the real command, a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gloper_jobs.store import Store
from gloper_jobs.store import repository as repo


def gloper(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gloper_jobs.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def _photo(path: Path, size: tuple[int, int], seed: int) -> None:
    """A 4:3 (or ``size``: width, height) photo with a dark band, the label's pattern."""
    w, h = size
    rgb = np.random.default_rng(seed).integers(100, 255, (h, w, 3), dtype=np.uint8)
    rgb[h // 3: h // 2] //= 4
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _label(path: Path, size: tuple[int, int]) -> None:
    w, h = size
    lab = np.full((h, w), 255, np.uint8)
    lab[h // 3: h // 2] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lab).save(path)


def test_run_and_report_name_what_the_run_skipped_and_doubted(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    zebra = root / "Zebra"
    for i in range(4):
        _photo(zebra / f"z{i}.png", (64, 48), i)
    _label(zebra / "labels" / "z0.png", (64, 48))  # fits: scored
    _label(zebra / "labels" / "z1.png", (32, 24))  # smaller, same aspect: scored
    _label(zebra / "labels" / "z2.png", (37, 11))  # another shape: not scored
    (zebra / "labels" / "z3.png").write_bytes(b"not an image")  # unreadable
    outside = tmp_path / "elsewhere" / "far.png"
    _photo(outside, (64, 48), 9)
    (zebra / "far.png").symlink_to(outside)
    env = {"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "GLOPER_RESULTS_DIR": str(tmp_path / "res"),
           "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": "1"}

    run = gloper("run", str(root), "--method", "kmeans", "--param", "size=32", "--no-foreground",
                 "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "4 processed, 0 failed" in out
    assert ("noticed: 1 left out by the scan, 1 label unreadable, 1 label of another shape "
            "(listed below, with how to fix them)") in out
    report = gloper("report", env=env)
    assert report.returncode == 0, report.stderr
    for text in (out, report.stdout):
        assert "left out by the scan (1;" in text and "copy the photo into the root" in text
        assert "Zebra/far.png: a symlink to" in text
        assert "labels that cannot be read (photos not scored): 1" in text
        assert "  Zebra/z3.png: label unreadable:" in text and "fix or remove the file" in text
        assert "labels of another shape than their photo (photos not scored): 1" in text
        assert "  Zebra/z2.png: label of another shape:" in text and "is 37x11, its photo 64x48" in text
        assert "give the label the photo's shape" in text
        assert re.search(r"^Zebra\s+2\s", text, re.M)  # the Dice table scores only the two labels that fit

    with Store(env["GLOPER_DATABASE_URL"]).session() as s:
        job = repo.get_job(s)
        scored = {i.rel_path for i, c in repo.item_candidates(s, repo.require_id(job)) if c.dice is not None}
    assert scored == {"Zebra/z0.png", "Zebra/z1.png"}
