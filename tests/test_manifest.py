"""Manifests: photos listed in a CSV/Parquet table (or a wildlife-datasets metadata table)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.exceptions import ManifestError
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.manifest import load_manifest
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.store.repository import items_with_status
from tests.outputs_helpers import cli_env, gloper


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """A labelled synthetic archive (root/) and, beside it, a photo outside the root."""
    root = tmp_path / "root"
    make_dataset(root, per_species=2, size=64)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(root / "Spots" / "spots_00.jpg", outside / "secret.jpg")
    (root / "Spots" / "link_out.jpg").symlink_to(outside / "secret.jpg")
    return root


def _items(settings: Settings, job_id: int) -> dict[str, object]:
    with Store(settings.database_url).session() as s:
        return {i.rel_path: i for i in items_with_status(s, job_id, ["done", "failed", "pending"])}


def test_csv_manifest_runs_listed_photos_and_fails_escapes(archive: Path, settings: Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "secret.jpg"
    pd.DataFrame({
        "path": ["Stripes/stripes_00.jpg", "Spots/spots_01.jpg", "../outside/secret.jpg", str(outside),
                 "Spots/link_out.jpg"],
        "identity": ["zebra-7", "", "x", "y", "z"],
        "image_id": ["101", "102", "103", "104", "105"],
    }).to_csv(tmp_path / "m.csv", index=False)
    summary = run_dataset(archive, "kmeans", settings, params={"size": 64}, foreground=False, progress=False,
                          manifest=tmp_path / "m.csv")
    assert summary.processed == 2 and summary.job.n_items == 5
    failed = dict(summary.failed)
    assert set(failed) == {"../outside/secret.jpg", str(outside), "Spots/link_out.jpg"}
    assert "'..' leads out" in failed["../outside/secret.jpg"]
    assert "an absolute path elsewhere" in failed[str(outside)]
    assert "a symlink on the way points out" in failed["Spots/link_out.jpg"]
    assert all("outside the dataset root" in m for m in failed.values())
    items = _items(settings, summary.job.id or 0)
    zebra = items["Stripes/stripes_00.jpg"]
    assert (zebra.identity, zebra.image_id, zebra.species) == ("zebra-7", "101", "Stripes")  # type: ignore[attr-defined]
    assert items["Spots/spots_01.jpg"].identity is None  # type: ignore[attr-defined]
    assert zebra.label_path and Path(zebra.label_path).name == "stripes_00.png"  # type: ignore[attr-defined]
    # nothing was written for the escaping rows, nothing outside the results folder
    assert not (settings.results_dir.parent / "outside" / "secret.jpg").is_dir()
    assert sorted(p.name for p in Path(summary.job.results_dir).rglob("choice.json")) == ["choice.json"] * 2
    assert summary.job.source and "m.csv" in summary.job.source
    # the same manifest again: the same job, nothing redone; retrying the escapes fails them again
    again = run_dataset(archive, "kmeans", settings, params={"size": 64}, foreground=False, progress=False,
                        manifest=tmp_path / "m.csv", retry_failed=True)
    assert again.job.id == summary.job.id and again.processed == 0 and len(again.failed) == 3
    # an evaluate job finds its extract job by the same manifest (a plain scan has none yet)
    from gloper_jobs.exceptions import JobNotFoundError
    from gloper_jobs.jobs.kinds.evaluate import record_evaluate_job

    store = Store(settings.database_url)
    ev = record_evaluate_job(store, settings, archive, "kmeans", None, {"size": 64}, foreground=False,
                             manifest=tmp_path / "m.csv")
    assert ev.job.params["source_job"] == summary.job.id and ev.added == 2
    with pytest.raises(JobNotFoundError):
        record_evaluate_job(store, settings, archive, "kmeans", None, {"size": 64}, foreground=False)
    # a folder scan of the same root is another job (the manifest is part of the key)
    scan = run_dataset(archive, "kmeans", settings, params={"size": 64}, foreground=False, progress=False)
    assert scan.job.id != summary.job.id and scan.job.n_items == 8  # the scan leaves the symlink out out


def test_relative_root_and_manifest_from_the_command_line(archive: Path, tmp_path: Path, models_dir: Path) -> None:
    pd.DataFrame({"path": ["Spots/spots_00.jpg", "../outside/secret.jpg"]}).to_csv(tmp_path / "m.csv", index=False)
    env = cli_env(tmp_path, models_dir)
    r = gloper("run", "root", "--method", "kmeans", "--param", "size=64", "--no-foreground", "--manifest", "m.csv",
               "--no-progress", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "1 processed, 1 failed" in r.stdout and "'..' leads out" in r.stdout
    r = gloper("run", "root", "--method", "kmeans", "--param", "size=64", "--no-foreground", "--no-progress",
               env=env, cwd=tmp_path)  # a relative folder scan: every photo inside runs
    assert r.returncode == 0, r.stderr
    assert "8 processed, 0 failed" in r.stdout


def test_wildlife_datasets_table_is_taken_as_it_is(archive: Path, settings: Settings, tmp_path: Path) -> None:
    # wildlife-datasets' metadata: image_id (int), identity, path, species, bbox, segmentation, date...
    table = pd.DataFrame({
        "image_id": [1, 2, 3],
        "identity": ["leo", "unknown", "leo"],
        "path": ["Rosettes/rosettes_00.jpg", "Rosettes/rosettes_01.jpg", "Patches/patches_00.jpg"],
        "species": ["jaguar", "jaguar", "giraffe"],
        "bbox": [[1.0, 2.0, 30.0, 40.0], None, [0.0, 0.0, 64.0, 64.0]],
        "segmentation": [None, [1, 2, 3], None],
        "date": ["2024-01-02", None, "2024-03-04"],
    })
    table.to_parquet(tmp_path / "metadata.parquet")
    summary = run_dataset(archive, "kmeans", settings, params={"size": 64}, foreground=False, progress=False,
                          manifest=str(tmp_path / "metadata.parquet"))
    assert summary.processed == 3 and not summary.failed
    items = _items(settings, summary.job.id or 0)
    assert [(i.image_id, i.identity, i.species) for i in items.values()] == [  # type: ignore[attr-defined]
        ("3", "leo", "giraffe"), ("1", "leo", "jaguar"), ("2", "unknown", "jaguar")]
    assert "ALL" in summary.report  # the labels beside the photos were found and scored
    out = tmp_path / "x.parquet"
    r = gloper("export", str(summary.job.id), "--out", str(out), env={
        "GLOPER_DATABASE_URL": settings.database_url})
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out)
    assert list(df["identity"]) == ["leo", "leo", "unknown"] and list(df["image_id"]) == ["3", "1", "2"]


@pytest.mark.parametrize(("rows", "message"), [
    ({"file": ["Stripes/stripes_00.jpg"]}, "has no path column (columns: file)"),
    ({"path": ["Stripes/stripes_00.jpg", "Stripes/./stripes_00.jpg"]}, "rows 2 and 3: the photo Stripes/stripes_00.jpg is listed twice"),
    ({"path": ["Stripes/stripes_00.jpg", ""]}, "row 3: empty path"),
    ({"path": []}, "has no rows"),
])
def test_bad_manifests_fail_before_anything_is_written(archive: Path, tmp_path: Path, models_dir: Path,
                                                       rows: dict[str, list[str]], message: str) -> None:
    manifest = tmp_path / "bad.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_manifest(manifest, archive)
    env = cli_env(tmp_path, models_dir)
    r = gloper("run", str(archive), "--method", "kmeans", "--manifest", str(manifest), "--no-progress", env=env)
    assert r.returncode == 2 and message.split(":")[0] in r.stderr and "Traceback" not in r.stderr
    db = tmp_path / "store.db"
    if db.exists():  # the store may exist, but holds no job and no item
        with sqlite3.connect(db) as con:
            tables = {t for (t,) in con.execute("select name from sqlite_master where type='table'")}
            assert "job" not in tables or con.execute("select count(*) from job").fetchone() == (0,)
    assert not (tmp_path / "res").exists()


def test_submit_records_manifest_items(archive: Path, settings: Settings, tmp_path: Path) -> None:
    from gloper_jobs.jobs.kinds.extract import record_extract_job

    pd.DataFrame({"path": ["Spots/spots_00.jpg", "../x.jpg"], "identity": ["a", "b"]}).to_csv(tmp_path / "m.csv", index=False)
    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, archive, "kmeans", manifest=tmp_path / "m.csv")
    again = record_extract_job(store, settings, archive, "kmeans", manifest=tmp_path / "m.csv")
    assert sub.created and not again.created and again.job.id == sub.job.id
    assert sub.job.n_items == 2 and sub.added == 2 and again.added == 0
    items = _items(settings, sub.job.id or 0)
    assert items["Spots/spots_00.jpg"].identity == "a"  # type: ignore[attr-defined]
    # (an s3:// root is now listed for the queue: tests/test_cloud.py, against a local S3 server)
    with pytest.raises(Exception, match="unsupported storage scheme 'gs'"):
        record_extract_job(store, settings, "gs://bucket/photos", "kmeans")
