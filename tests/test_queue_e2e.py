"""End to end through the real queue: `gloper submit`, Redis, two `gloper worker --gpus cpu`
subprocesses and PostgreSQL; the Dice table must equal the embedded run's."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.scoring.reports import format_species_table, item_scores, species_rows
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.store import repository as repo
from gloper_jobs.testbed.cluster import Cluster, candidate_rows, counts, drained, items

pytestmark = [pytest.mark.queue, pytest.mark.slow]

TINY_GLOPER = {"size": "32", "steps": "2", "local_sizes": "4,8"}


def _dataset(examples: Path, tmp: Path) -> Path:
    """The example photos plus one corrupt JPEG (Zebra/corrupt.jpg)."""
    root = tmp / "photos"
    shutil.copytree(examples, root, ignore=shutil.ignore_patterns("README*"))
    (root / "Zebra" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a photo")
    return root


def _table(store: Store, job_id: int) -> tuple[str, list[tuple[str, str, float, str, float]]]:
    with store.session() as s:
        scores = item_scores(repo.item_candidates(s, job_id))
    rows = [(x.rel_path, x.oracle, round(x.oracle_dice, 9), x.choice, round(x.choice_dice, 9)) for x in scores]
    return format_species_table(species_rows(scores), "Dice"), rows


def _job_id(stdout: str) -> int:
    return int(stdout.strip().splitlines()[-1])


def test_two_workers_drain_kmeans_and_gloper_like_the_embedded_run(
        examples_dir: Path, database_url: str, broker_url: str, tmp_path: Path) -> None:
    dataset = _dataset(examples_dir, tmp_path)
    n_photos = sum(1 for p in dataset.rglob("*") if p.is_file() and p.parent.name not in ("label", "labels"))
    cluster = Cluster(database_url, broker_url, tmp_path)
    gloper_params = [a for k, v in TINY_GLOPER.items() for a in ("--param", f"{k}={v}")]
    km = cluster.gloper("submit", "extract", str(dataset), "--method", "kmeans")
    gl = cluster.gloper("submit", "extract", str(dataset), "--method", "gloper", "--device-class", "cpu",
                        *gloper_params)
    km_job, gl_job = _job_id(km.stdout), _job_id(gl.stdout)
    assert km_job != gl_job
    assert f"{n_photos} enqueued" in km.stdout
    store = cluster.store()
    try:
        cluster.start_worker("cpu1")
        cluster.start_worker("cpu2")
        cluster.wait_for(lambda: drained(store, km_job) and drained(store, gl_job), 600, "both jobs to finish")
        # An evaluate job scores the stored k-means masks on the same workers (evaluate.cpu).
        ev = cluster.gloper("submit", "evaluate", str(dataset), "--method", "kmeans")
        ev_job = _job_id(ev.stdout)
        assert f"{n_photos - 1} enqueued on evaluate.cpu" in ev.stdout  # labelled and done
        cluster.wait_for(lambda: drained(store, ev_job), 300, "the evaluate job to finish")
        # The same submission again: no new rows, nothing enqueued (everything is finished).
        again = cluster.gloper("submit", "extract", str(dataset), "--method", "kmeans")
        assert _job_id(again.stdout) == km_job
        assert "0 new, 0 enqueued" in again.stdout
        status = cluster.gloper("status", str(km_job)).stdout
    finally:
        cluster.stop()

    for job_id in (km_job, gl_job):
        c = counts(store, job_id)
        assert c == {"done": n_photos - 1, "failed": 1}, c
        rows = items(store, job_id)
        assert len(rows) == n_photos
        bad = rows["Zebra/corrupt.jpg"]
        assert bad.status == "failed" and bad.error and "corrupt.jpg" in bad.error and bad.traceback
        done = [i for i in rows.values() if i.status == "done"]
        assert all(i.host and i.device == "cpu" and i.worker for i in done)
        assert all(i.deliveries == 1 for i in done)
        # exactly one row per (item, candidate)
        assert all(n == 1 for _, _, n in candidate_rows(store, job_id))
    assert counts(store, ev_job) == {"done": n_photos - 1}
    extracted = {r[0]: r for r in _table(store, km_job)[1]}
    evaluated = {r[0]: r for r in _table(store, ev_job)[1]}
    assert evaluated.keys() == extracted.keys()
    for path, row in evaluated.items():  # stored (photo-size) masks rescored: close, same choice
        assert row[3] == extracted[path][3] and abs(row[4] - extracted[path][4]) < 0.02
    workers = {i.worker.split("@")[0] for i in items(store, km_job).values() if i.worker}
    assert workers <= {"cpu1", "cpu2"} and workers, workers
    assert "done 10" in status and "per worker" in status

    # The embedded run, same settings, on SQLite: identical Dice per photo and per species.
    for method, params, job_id in (("kmeans", {}, km_job), ("gloper", TINY_GLOPER, gl_job)):
        settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'embedded.db'}",
                                     results_dir=tmp_path / "embedded", torch_threads=1)
        summary = run_dataset(dataset, method, settings, params=dict(params), progress=False)
        embedded = Store(settings.database_url)
        assert _table(embedded, summary.job.id) == _table(store, job_id)
        assert len(_table(store, job_id)[1]) == n_photos - 1


def test_training_job_through_a_real_worker_then_extract_with_its_settings(
        examples_dir: Path, database_url: str, broker_url: str, tmp_path: Path) -> None:
    dataset = tmp_path / "photos"
    shutil.copytree(examples_dir, dataset, ignore=shutil.ignore_patterns("README*"))
    tiny = [a for k, v in {"size": "32", "steps": "2", "local_sizes": "4"}.items() for a in ("--param", f"{k}={v}")]
    cluster = Cluster(database_url, broker_url, tmp_path)
    store = cluster.store()
    try:
        tr = cluster.gloper("submit", "calibrate", str(dataset), "--method", "gloper", "--device-class", "cpu",
                            "--grid", "rho=0.3,0.5", *tiny)
        tr_job = _job_id(tr.stdout)
        assert "20 enqueued on calibrate.cpu" in tr.stdout  # 10 labelled photos x 2 settings
        cluster.start_worker("cpu1")
        cluster.wait_for(lambda: drained(store, tr_job), 600, "the calibration job to finish")
        table = cluster.gloper("calibration", str(tr_job)).stdout
        assert all(sp in table for sp in ("Zebra", "Tiger", "Seal")) and "rho=" in table
        ex = cluster.gloper("submit", "extract", str(dataset), "--method", "gloper", "--device-class", "cpu",
                            "--settings-from", str(tr_job), *tiny)
        ex_job = _job_id(ex.stdout)
        cluster.wait_for(lambda: drained(store, ex_job), 600, "the calibrated extract job to finish")
    finally:
        cluster.stop()
    assert counts(store, tr_job) == {"done": 20}
    assert counts(store, ex_job) == {"done": 10}
    with store.session() as s:
        job = repo.get_job(s, ex_job)
    assert job.params["settings_from"] == tr_job and len(job.params["per_species"]) == 10
