"""Inputs and results on S3-compatible storage, against a local moto server on 127.0.0.1 (never remote)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gloper_jobs.data.outputs import read_mask
from gloper_jobs.data.rle import decode
from tests.outputs_helpers import cli_env, gloper
from tests.s3_server import archive_bucket, moto_s3

s3fs = pytest.importorskip("s3fs", reason="the s3 extra: pip install 'gloper-jobs[s3]'")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")

SPECIES = ["Tiger", "Zebra", "Cat"]


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port, and the AWS variables that point at it."""
    with moto_s3(tmp_path_factory.mktemp("aws")) as env:
        yield env


@pytest.fixture(scope="module")
def fs(s3_env: dict[str, str], examples_dir: Path) -> s3fs.S3FileSystem:
    fs = archive_bucket(examples_dir, SPECIES)
    manifest = pd.DataFrame({"path": [next(f.relative_to(examples_dir).as_posix()
                                            for f in sorted((examples_dir / sp).iterdir()) if f.is_file())
                                       for sp in SPECIES[:2]],
                             "identity": ["tiger-1", "zebra-9"]})
    fs.pipe_file("photos/manifests/m.csv", manifest.to_csv(index=False).encode())
    return fs


def test_run_export_and_report_through_s3(fs: s3fs.S3FileSystem, s3_env: dict[str, str], tmp_path: Path,
                                          models_dir: Path) -> None:
    env = {**cli_env(tmp_path, models_dir), **s3_env}
    args = ("run", "s3://photos/archive", "--method", "kmeans", "--manifest", "s3://photos/manifests/m.csv",
            "--upload-results", "s3://results/runs", "--no-progress")
    r = gloper(*args, env=env)
    assert r.returncode == 0, r.stderr
    assert "job 1: 2 processed, 0 failed" in r.stdout and "ALL" in r.stdout  # labels came along: scored
    staged = tmp_path / "staged" / "photos" / "archive"
    assert sorted(p.parent.name for p in staged.rglob("*") if p.is_file() and p.parent.name not in ("label", "labels")) == sorted(
        ["Cat", "Tiger", "Zebra"])
    local_job = tmp_path / "res" / "job-00001-kmeans"
    local = sorted(p.relative_to(local_job).as_posix() for p in local_job.rglob("*") if p.is_file())
    fs.invalidate_cache()
    remote = sorted(k.removeprefix("results/runs/job-00001-kmeans/") for k in fs.find("results/runs"))
    # per photo its chosen mask and choice.json (the other candidates are RLEs in the store)
    assert remote == local and any(k.endswith("choice.json") for k in remote) and len(local) == 4
    png = next(k for k in local if k.endswith(".png"))
    assert fs.cat_file(f"results/runs/job-00001-kmeans/{png}") == (local_job / png).read_bytes()

    # a second run downloads nothing again and processes nothing again
    mtimes = {p: p.stat().st_mtime_ns for p in staged.rglob("*") if p.is_file()}
    again = gloper(*args, env=env)
    assert again.returncode == 0 and "0 processed" in again.stdout and "2 already done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in staged.rglob("*") if p.is_file()} == mtimes

    r = gloper("export", "1", "--format", "parquet", "--out", "s3://results/exports/masks.parquet", env=env)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(io.BytesIO(fs.cat_file("results/exports/masks.parquet")))
    assert sorted(df["identity"]) == ["tiger-1", "zebra-9"]
    for row in df.itertuples():
        mask = decode(row.mask_rle_counts, row.mask_height, row.mask_width)
        assert np.array_equal(mask, read_mask(local_job / row.path / f"{row.choice}.png"))

    r = gloper("report", "1", "--html", "s3://results/report.html", env=env)
    assert r.returncode == 0, r.stderr
    page = fs.cat_file("results/report.html").decode()
    assert "Dice per species" in page and "tiger-1" in page and "s3://photos/archive" in page


def test_clear_errors_for_missing_buckets_and_schemes(fs: s3fs.S3FileSystem, s3_env: dict[str, str],
                                                      tmp_path: Path, models_dir: Path) -> None:
    env = {**cli_env(tmp_path, models_dir), **s3_env}
    r = gloper("run", "s3://no-such-bucket/photos", "--method", "kmeans", env=env)
    assert r.returncode == 2 and "s3://no-such-bucket/photos" in r.stderr and "Traceback" not in r.stderr
    r = gloper("run", "s3://photos/empty-prefix", "--method", "kmeans", env=env)
    assert r.returncode == 2 and "no images under this prefix" in r.stderr
    r = gloper("run", "gs://photos/archive", "--method", "kmeans", env=env)
    assert r.returncode == 2 and "unsupported storage scheme 'gs'" in r.stderr
    r = gloper("run", "s3://photos/archive", "--method", "kmeans", "--manifest", "s3://photos/missing.csv", env=env)
    assert r.returncode == 2 and "s3://photos/missing.csv does not exist" in r.stderr
