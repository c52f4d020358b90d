"""The embedded run: results, resume after a kill -9, bad photos isolated, nothing duplicated."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gloper_jobs.data.outputs import TMP_MARK, candidate_mask, read_mask
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.settings import Settings
from gloper_jobs.store import ItemStatus, Store
from gloper_jobs.store import repository as repo


def _counts(db: Path) -> tuple[int, int, int]:
    con = sqlite3.connect(db)
    try:
        jobs = con.execute("select count(*) from job").fetchone()[0]
        items = con.execute("select count(*) from item").fetchone()[0]
        cands = con.execute("select count(*) from candidate").fetchone()[0]
        return jobs, items, cands
    finally:
        con.close()


def test_run_writes_masks_rows_and_table_then_skips(tmp_path: Path, settings: Settings, synthetic_dir: Path) -> None:
    summary = run_dataset(synthetic_dir, "kmeans", settings, params={"size": 64}, progress=False)
    assert summary.processed == 4 and not summary.failed and summary.created
    assert "Stripes" in summary.report and "ALL" in summary.report and "oracle Dice" in summary.report
    db = tmp_path / "store.db"
    assert _counts(db) == (1, 4, 8)
    store = Store(settings.database_url)
    with store.session() as s:
        pairs = repo.item_candidates(s, summary.job.id)
        for item, cand in pairs:
            # the chosen mask is a full-resolution PNG; every candidate is an RLE in the store
            assert bool(cand.mask_path) == cand.is_choice and cand.rle is not None
            mask = read_mask(Path(cand.mask_path)) if cand.mask_path else candidate_mask("", cand.rle, (
                item.height, item.width))
            assert mask.shape == (item.height, item.width)  # resized back to the photo
            assert cand.dice is not None and 0 <= cand.dice <= 1
        assert sum(c.is_choice for _, c in pairs) == 4
    second = run_dataset(synthetic_dir, "kmeans", settings, params={"size": 64}, progress=False)
    assert second.processed == 0 and second.skipped == 4 and not second.created
    assert _counts(db) == (1, 4, 8)
    third = run_dataset(synthetic_dir, "kmeans", settings, params={"size": 32}, progress=False)
    assert third.created and third.processed == 4  # other settings are another job


def test_bad_photos_are_isolated(tmp_path: Path, settings: Settings, synthetic_dir: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    (data / "Spots" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (data / "Spots" / "empty.png").write_bytes(b"")
    good = next((data / "Stripes").glob("*.jpg")).read_bytes()
    (data / "Stripes" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    summary = run_dataset(data, "kmeans", settings, params={"size": 64}, progress=False)
    assert summary.processed == 4
    failed = dict(summary.failed)
    assert set(failed) == {"Spots/corrupt.jpg", "Spots/empty.png", "Stripes/truncated.jpg"}
    assert "empty file" in failed["Spots/empty.png"] and "truncated" in failed["Stripes/truncated.jpg"]
    assert "failed photos (3)" in summary.report and "Spots/corrupt.jpg" in summary.report
    store = Store(settings.database_url)
    with store.session() as s:
        rows = repo.latest_errors(s, summary.job.id)
        assert all(r.traceback and "ImageLoadError" in r.traceback for r in rows)
    # a second run leaves failed photos alone unless asked
    again = run_dataset(data, "kmeans", settings, params={"size": 64}, progress=False)
    assert again.processed == 0 and not again.failed
    (data / "Spots" / "empty.png").write_bytes((data / "Spots" / "spots_00.jpg").read_bytes())
    retried = run_dataset(data, "kmeans", settings, params={"size": 64}, progress=False, retry_failed=True)
    assert retried.processed == 1 and len(retried.failed) == 2


def test_unlabelled_photos_and_bad_labels(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "d" / "Cat" / "label").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "d" / "Cat" / f"{name}.png")
    (tmp_path / "d" / "Cat" / "label" / "b.png").write_text("garbage")
    summary = run_dataset(tmp_path / "d", "watershed", settings, params={"size": 32}, progress=False,
                          foreground=False)
    assert summary.processed == 2 and not summary.failed
    assert "no labelled photos" in summary.report
    store = Store(settings.database_url)
    with store.session() as s:
        b = next(i for i in repo.items_with_status(s, summary.job.id, ["done"]) if i.rel_path == "Cat/b.png")
        assert "label" in (b.note or "") and "cannot be read" in b.note


def _start_and_wait_for_one(tmp_path: Path, models_dir: Path, synthetic_dir: Path, db_name: str):
    env = {**os.environ, "GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / db_name}",
           "GLOPER_RESULTS_DIR": str(tmp_path / "results"), "GLOPER_MODELS_DIR": str(models_dir),
           "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": "1"}
    cmd = [sys.executable, "-m", "gloper_jobs.cli", "run", str(synthetic_dir), "--method", "gloper",
           "--param", "size=32", "--param", "local_sizes=4,8", "--param", "steps=12", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / db_name
    deadline = time.time() + 240
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if db.exists():
            try:
                con = sqlite3.connect(db, timeout=1)
                done = con.execute("select count(*) from item where status='done'").fetchone()[0]
                con.close()
            except sqlite3.Error:
                continue
            if done >= 1:
                break
    assert proc.poll() is None, "the run finished before it could be interrupted; make items slower"
    return proc, cmd, env, db, done


@pytest.mark.slow
def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path: Path, models_dir: Path, synthetic_dir: Path) -> None:
    proc, cmd, env, db, done = _start_and_wait_for_one(tmp_path, models_dir, synthetic_dir, "k.db")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= done < 4
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    jobs, items, cands = _counts(db)
    assert (jobs, items) == (1, 4)
    assert cands == 4 * 8  # local_4, local_8, fused, consensus, each in both polarities: exactly once each
    con = sqlite3.connect(db)
    statuses = {r[0] for r in con.execute("select status from item")}
    con.close()
    assert statuses == {ItemStatus.done.value}
    leftovers = [p for p in (tmp_path / "results").rglob("*") if p.name.startswith(TMP_MARK)]
    assert leftovers == []
    for png in (tmp_path / "results").rglob("*.png"):
        read_mask(png)  # every mask file is complete


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_running(tmp_path: Path, models_dir: Path, synthetic_dir: Path) -> None:
    proc, cmd, env, db, done = _start_and_wait_for_one(tmp_path, models_dir, synthetic_dir, "c.db")
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    con = sqlite3.connect(db)
    statuses = [r[0] for r in con.execute("select status from item")]
    con.close()
    assert ItemStatus.running.value not in statuses and statuses.count(ItemStatus.done.value) >= 1
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"{statuses.count(ItemStatus.done.value)} already done" in out.stdout
    assert _counts(db) == (1, 4, 4 * 8)


def test_write_candidates_all_keeps_every_file_and_the_report_reads_rles(
        tmp_path: Path, settings: Settings, synthetic_dir: Path) -> None:
    """The default writes the chosen PNG only (choice.json says so) and the report draws every
    candidate from the stored RLEs; ``write_candidates=all`` writes every candidate's PNG as before."""
    import json

    from gloper_jobs.data.outputs import CHOICE_FILE
    from gloper_jobs.exports.records import photo_records
    from gloper_jobs.reporting import _card

    summary = run_dataset(synthetic_dir, "kmeans", settings, params={"size": 64}, progress=False)
    store = Store(settings.database_url)
    with store.session() as s:
        for rec in photo_records(s, summary.job):
            folder = Path(rec.chosen.mask_path).parent if rec.chosen else None
            assert folder is not None and sorted(p.name for p in folder.glob("*.png")) == [f"{rec.item.choice}.png"]
            doc = json.loads((folder / CHOICE_FILE).read_text())
            assert {c["name"]: c["mask"] for c in doc["candidates"]} == {
                c.name: (f"{c.name}.png" if c.is_choice else None) for c in rec.candidates}
            card = _card(rec)
            assert card["problem"] is None and card["overlay"]
            assert len(card["candidates"]) == 2 and all(c["thumb"] for c in card["candidates"])
            for c in rec.candidates:  # exported at the photo's size from the RLE
                assert c.rle is not None and (c.rle.height, c.rle.width) == (rec.item.height, rec.item.width)
    every = settings.model_copy(update={"write_candidates": "all", "results_dir": tmp_path / "all",
                                        "database_url": f"sqlite:///{tmp_path / 'all.db'}"})
    run_dataset(synthetic_dir, "kmeans", every, params={"size": 64}, progress=False)
    with Store(every.database_url).session() as s:
        job = repo.get_job(s)
        pairs = repo.item_candidates(s, repo.require_id(job))
        assert len(pairs) == 8 and all(Path(c.mask_path).is_file() for _, c in pairs)
        for item, c in pairs:  # the stored RLE is the same mask as the file, at the working size
            assert np.array_equal(candidate_mask("", c.rle, (item.height, item.width)), read_mask(c.mask_path))
