"""A cluster that shares no filesystem: the archive and the masks live only in object storage.

moto's S3 server on 127.0.0.1 stands in for the store (never a remote service). The
in-process test runs items as a worker does; the cluster test starts two real
`gloper worker` processes that share nothing but Redis, PostgreSQL and the S3 server
(own working folder, HOME, staging and cache) and exports from a third folder.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from gloper_jobs.data.outputs import read_mask
from gloper_jobs.exceptions import StorageError, StorageUnavailableError
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from tests.queue_checks import candidate_rows, counts, drained, items

s3fs = pytest.importorskip("s3fs", reason="the s3 extra: pip install 'gloper-jobs[s3]'")
pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")

SPECIES = ["Tiger", "Zebra", "Cows"]


@pytest.fixture()
def s3(tmp_path: Path, examples_dir: Path) -> Iterator[tuple[dict[str, str], s3fs.S3FileSystem]]:
    """The S3 server with bucket ``photos`` (three species with labels, one corrupt photo, a
    manifest of two photos and one missing) and an empty bucket ``results``."""
    from tests.s3_server import moto_s3

    with moto_s3(tmp_path) as env:
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("photos")
        fs.mkdir("results")
        for sp in SPECIES:
            for p in (examples_dir / sp).rglob("*"):
                if p.is_file():
                    fs.put_file(str(p), f"photos/archive/{p.relative_to(examples_dir).as_posix()}")
        fs.pipe_file("photos/archive/Zebra/corrupt.jpg", b"\xff\xd8\xff\xe0 this is not a photo")
        tiger = next(p.name for p in (examples_dir / "Tiger").iterdir() if p.is_file())
        manifest = pd.DataFrame({"path": [f"Tiger/{tiger}", "Zebra/gone.jpg"], "identity": ["t-1", "z-0"]})
        fs.pipe_file("photos/manifests/m.csv", manifest.to_csv(index=False).encode())
        yield env, fs


def _objects(fs: s3fs.S3FileSystem, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(prefix))


def test_worker_streams_each_photo_and_uploads_each_mask(s3: tuple[dict[str, str], s3fs.S3FileSystem],
                                                         tmp_path: Path, models_dir: Path,
                                                         examples_dir: Path) -> None:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.kinds.extract import record_extract_job
    from gloper_jobs.jobs.recording import run_and_record
    from gloper_jobs.store import repository as repo

    _, fs = s3
    settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'q.db'}", results_dir="s3://results/masks/",
                                 models_dir=models_dir, device="cpu", staging_dir=tmp_path / "staging",
                                 foreground_model="u2netp")
    assert settings.results_root == "s3://results/masks"
    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, "s3://photos/archive", "kmeans")
    job = sub.job
    assert job.dataset == "s3://photos/archive" and job.results_dir.startswith("s3://results/masks/job-")
    rows = items(store, job.id or 0)
    photos = [f"{sp}/{p.name}" for sp in SPECIES for p in (examples_dir / sp).iterdir() if p.is_file()]
    assert sorted(rows) == sorted([*photos, "Zebra/corrupt.jpg"])  # listed, not downloaded
    assert rows["Zebra/corrupt.jpg"].label_path is None
    assert all(r.label_path and "/label" in r.label_path for k, r in rows.items() if "corrupt" not in k)
    assert rows["Cows/cow1_1.png"].species == "Cows"
    assert not (tmp_path / "staging").exists()  # submission downloads nothing

    ctx = WorkerContext.boot(settings, "t1", store=store)
    results = {rel: run_and_record(ctx, job, it) for rel, it in rows.items()}
    assert results["Zebra/corrupt.jpg"].status == "failed" and "corrupt" in (results["Zebra/corrupt.jpg"].message or "")
    assert all(r.status == "done" for k, r in results.items() if "corrupt" not in k)
    cands = candidate_rows(store, job.id or 0)
    objects = _objects(fs, job.results_dir.removeprefix("s3://"))
    masks = [o for o in objects if o.endswith(".png")]
    assert len(masks) == len(cands) > 3 and sum(o.endswith("choice.json") for o in objects) == 3
    with store.session() as s:
        stored = repo.item_candidates(s, job.id or 0)
    for _, c in stored:
        assert c.mask_path.startswith(job.results_dir + "/") and c.mask_path.removeprefix("s3://") in masks
    item, first = stored[0]
    assert item.height and read_mask(first.mask_path).shape == (item.height, item.width)  # read back from S3
    assert list((tmp_path / "staging").rglob("*.*")) == []  # every photo and mask deleted after its item

    # a re-delivered item writes the same objects again: no new object, no new row
    tiger = next(k for k in rows if k.startswith("Tiger/"))
    again = run_and_record(ctx, job, items(store, job.id or 0)[tiger])
    assert again.status == "done"
    assert _objects(fs, job.results_dir.removeprefix("s3://")) == objects
    assert candidate_rows(store, job.id or 0) == cands and all(n == 1 for _, _, n in cands)

    # a manifest on S3 picks a subset; a row whose photo is not there fails saying so
    msub = record_extract_job(store, settings, "s3://photos/archive", "kmeans", manifest="s3://photos/manifests/m.csv")
    mrows = items(store, msub.job.id or 0)
    assert sorted(mrows) == [tiger, "Zebra/gone.jpg"] and mrows[tiger].identity == "t-1" and mrows[tiger].label_path
    gone = run_and_record(ctx, msub.job, mrows["Zebra/gone.jpg"])
    assert gone.status == "failed"
    assert gone.message == ("s3://photos/archive/Zebra/gone.jpg does not exist; upload it or fix the manifest, "
                            "then `gloper retry-failed JOB`")
    assert "testing-secret" not in (gone.message or "")
    ctx.close()

    # kinds that read a folder say which kind reads a prefix
    from gloper_jobs.jobs.kinds import SubmitRequest, get_kind

    with pytest.raises(StorageError, match="only `submit extract` reads an s3:// prefix"):
        get_kind("evaluate").record(store, settings, SubmitRequest("s3://photos/archive", "kmeans"))
    store.dispose()


def test_storage_errors_say_whether_to_retry_and_what_to_fix() -> None:
    from gloper_jobs.storage import classify

    url = "s3://photos/archive/Tiger/a.jpg"
    denied = classify(url, PermissionError("Access Denied"))
    assert isinstance(denied, StorageError) and "s3:GetObject" in str(denied) and "'photos'" in str(denied)
    bucket = classify(url, FileNotFoundError("The specified bucket does not exist"))
    assert isinstance(bucket, StorageError) and "the bucket 'photos' does not exist" in str(bucket)
    for exc in (OSError(errno.EBUSY, "Please reduce your request rate (SlowDown)"), ConnectionError("refused"),
                OSError(errno.EIO, "ServiceUnavailable")):
        assert isinstance(classify(url, exc), StorageUnavailableError), exc
    assert not isinstance(classify(url, ValueError("bad")), StorageUnavailableError)
