"""gloper export on a real k-means job over the example photos: every mask round-trips bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO

from gloper_jobs.data.outputs import CHOICE_FILE, read_mask
from gloper_jobs.data.rle import decode, encode
from tests.outputs_helpers import cli_env, gloper


@pytest.fixture(scope="module")
def kmeans_job(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, examples_dir: Path) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("export")
    env = cli_env(folder, models_dir)
    r = gloper("run", str(examples_dir), "--method", "kmeans", "--no-progress", "--write-candidates", "all", env=env)
    assert r.returncode == 0, r.stderr
    assert "job 1: 10 processed, 0 failed" in r.stdout
    return {**env, "FOLDER": str(folder)}


def test_default_run_writes_the_choice_and_exports_every_candidate_from_the_store(
        kmeans_job: dict[str, str], tmp_path: Path, models_dir: Path, examples_dir: Path) -> None:
    """Without --write-candidates all only the chosen PNG is written; the export rebuilds the
    others from the stored RLEs at the photo's size, equal to the files a run with all writes."""
    env = cli_env(tmp_path, models_dir)
    r = gloper("run", str(examples_dir), "--method", "kmeans", "--no-progress", env=env)
    assert r.returncode == 0 and "job 1: 10 processed, 0 failed" in r.stdout, r.stderr
    on_disk = _masks_on_disk(env)
    assert len(on_disk) == 10 and {name for _, name in on_disk} <= {"cluster_0", "cluster_1"}
    every = _masks_on_disk(kmeans_job)  # the same masks, every candidate written
    out = tmp_path / "masks.parquet"
    assert gloper("export", "1", "--format", "parquet", "--out", str(out), env=env).returncode == 0
    checked = 0
    for row in pd.read_parquet(out).itertuples():
        assert (row.path, row.choice) in on_disk
        chosen = decode(row.mask_rle_counts, row.mask_height, row.mask_width)
        assert np.array_equal(chosen, read_mask(on_disk[(row.path, row.choice)]))
        for c in row.other_candidates:
            assert (row.path, c["name"]) not in on_disk  # no file: it came from the store
            mask = decode(c["mask_rle_counts"], c["mask_height"], c["mask_width"])
            assert np.array_equal(mask, read_mask(every[(row.path, c["name"])])), (row.path, c["name"])
            checked += 1
    assert checked == 10


def _masks_on_disk(env: dict[str, str]) -> dict[tuple[str, str], Path]:
    root = next((Path(env["GLOPER_RESULTS_DIR"])).glob("job-00001-*"))
    return {(p.parent.relative_to(root).as_posix(), p.stem): p for p in root.rglob("*.png") if p.is_file()}


def test_rle_round_trip_of_odd_masks() -> None:
    rng = np.random.default_rng(3)
    for mask in (rng.random((37, 53)) > 0.5, np.zeros((5, 7), bool), np.ones((1, 9), bool)):
        rle = encode(mask)
        assert np.array_equal(decode(rle.counts, rle.height, rle.width), mask)
        assert rle.area == int(mask.sum())


def test_parquet_round_trips_every_mask_and_loads_in_pandas(kmeans_job: dict[str, str]) -> None:
    out = Path(kmeans_job["FOLDER"]) / "masks.parquet"
    r = gloper("export", "1", "--format", "parquet", "--out", str(out), env=kmeans_job)
    assert r.returncode == 0, r.stderr
    assert "10 rows" in r.stdout
    df = pd.read_parquet(out)
    assert len(df) == 10 and set(df["status"]) == {"done"}
    assert {"mask_rle_counts", "mask_height", "mask_width", "species", "identity", "choice", "dice", "iou",
            "foreground_fraction", "foreground_fallback", "settings", "method", "error"} <= set(df.columns)
    on_disk = _masks_on_disk(kmeans_job)
    checked = 0
    for row in df.itertuples():
        chosen = decode(row.mask_rle_counts, row.mask_height, row.mask_width)
        assert np.array_equal(chosen, read_mask(on_disk[(row.path, row.choice)])), row.path
        others = list(row.other_candidates)
        assert [c["name"] for c in others] == sorted({"cluster_0", "cluster_1"} - {row.choice})
        for c in others:
            mask = decode(c["mask_rle_counts"], c["mask_height"], c["mask_width"])
            assert np.array_equal(mask, read_mask(on_disk[(row.path, c["name"])]))
            checked += 1
        checked += 1
    assert checked == len(on_disk) == 20
    assert json.loads(df["settings"].iloc[0])["k"] == 2
    # labelled photos carry their scores; the oracle is METHOD.md's k-means figure (0.657,
    # tests/test_classical.py) plus what trimming the foreground's rim adds (0.685 measured)
    assert df["dice"].notna().all() and (df["dice"] <= df["oracle_dice"] + 1e-9).all()
    assert abs(df["oracle_dice"].mean() - 0.685) < 0.02


def test_coco_loads_in_pycocotools_and_matches_the_pngs(kmeans_job: dict[str, str]) -> None:
    out = Path(kmeans_job["FOLDER"]) / "masks.json"
    r = gloper("export", "1", "--format", "coco", "--out", str(out), env=kmeans_job)
    assert r.returncode == 0, r.stderr
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["pattern"]
    on_disk = _masks_on_disk(kmeans_job)
    assert len(coco.getAnnIds()) == 10
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann["image_id"])[0]
        mask = coco.annToMask(ann).astype(bool)
        assert np.array_equal(mask, read_mask(on_disk[(img["file_name"], ann["candidate"])]))
        assert ann["area"] == int(mask.sum())
        ys, xs = np.nonzero(mask)
        assert ann["bbox"][:2] == [float(xs.min()), float(ys.min())]


def test_csv_scores_and_choice_file_on_disk(kmeans_job: dict[str, str]) -> None:
    out = Path(kmeans_job["FOLDER"]) / "scores.csv"
    r = gloper("export", "1", "--format", "csv", "--out", str(out), env=kmeans_job)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(out)
    assert len(df) == 10 and {"path", "species", "choice", "dice", "oracle", "oracle_dice"} <= set(df.columns)
    assert (df["oracle_dice"] >= df["dice"] - 1e-9).all()
    # nothing but the store said which mask was chosen; now choice.json beside the masks does
    for row in df.itertuples():
        folder = next(Path(kmeans_job["GLOPER_RESULTS_DIR"]).glob("job-00001-*")) / row.path
        doc = json.loads((folder / CHOICE_FILE).read_text())
        assert doc["choice"] == row.choice and (folder / doc["mask"]).is_file()
        assert {c["name"] for c in doc["candidates"]} == {"cluster_0", "cluster_1"}


def test_a_missing_mask_is_reported_in_its_row(kmeans_job: dict[str, str], tmp_path: Path) -> None:
    import shutil

    env = {**kmeans_job, "GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'copy.db'}"}
    shutil.copy(kmeans_job["GLOPER_DATABASE_URL"].removeprefix("sqlite:///"), tmp_path / "copy.db")
    import sqlite3

    con = sqlite3.connect(tmp_path / "copy.db")
    con.execute("update candidate set mask_path = '/nonexistent/cluster_1.png' where name = 'cluster_1' "
                "and item_id = (select min(id) from item)")
    con.commit()
    con.close()
    r = gloper("export", "1", "--format", "parquet", "--out", str(tmp_path / "x.parquet"), env=env)
    assert r.returncode == 0, r.stderr
    assert "1 mask file(s) could not be read" in r.stdout
    df = pd.read_parquet(tmp_path / "x.parquet")
    assert df["error"].notna().sum() == 1 and "/nonexistent/cluster_1.png" in df["error"].dropna().iloc[0]
    r = gloper("export", "99", "--format", "csv", "--out", str(tmp_path / "y.csv"), env=env)
    assert r.returncode == 2 and "no job 99" in r.stderr


def test_parquet_is_written_in_row_groups(kmeans_job: dict[str, str]) -> None:
    import io

    import pyarrow.parquet as pq

    from gloper_jobs.exports import photo_records
    from gloper_jobs.exports.writers import to_parquet
    from gloper_jobs.store import Store
    from gloper_jobs.store.repository import get_job

    with Store(kmeans_job["GLOPER_DATABASE_URL"]).session() as s:
        data, n = to_parquet(photo_records(s, get_job(s, 1)), batch=3)
    assert n == 10 and pq.ParquetFile(io.BytesIO(data)).num_row_groups == 4
    paths = list(pd.read_parquet(io.BytesIO(data))["path"])
    assert paths == sorted(paths) and len(set(paths)) == 10
