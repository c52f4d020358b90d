"""A cluster that shares no filesystem: the archive and the masks live only in object storage.

moto's S3 server on 127.0.0.1 stands in for the store (never a remote service). The
in-process test runs items as a worker does; the cluster test starts two real
`gloper worker` processes that share nothing but Redis, PostgreSQL and the S3 server
(own working folder, HOME, staging and cache) and exports from a third folder.
"""

from __future__ import annotations

import errno
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gloper_jobs.data.outputs import read_mask
from gloper_jobs.exceptions import StorageError, StorageUnavailableError
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.testbed.cluster import candidate_rows, counts, drained, items

s3fs = pytest.importorskip("s3fs", reason="the s3 extra: pip install 'gloper-jobs[s3]'")
pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")

SPECIES = ["Tiger", "Zebra", "Cows"]


@pytest.fixture()
def s3(tmp_path: Path, examples_dir: Path) -> Iterator[tuple[dict[str, str], s3fs.S3FileSystem]]:
    """The S3 server with bucket ``photos`` (three species with labels, one corrupt photo, a
    manifest of two photos and one missing) and an empty bucket ``results``."""
    from tests.s3_server import archive_bucket, moto_s3

    with moto_s3(tmp_path) as env:
        fs = archive_bucket(examples_dir, SPECIES)
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

    dead = tmp_path / "staging" / "items" / "999999999"  # a process killed mid-item left its photo
    dead.mkdir(parents=True)
    (dead / "left.jpg").write_bytes(b"x")
    ctx = WorkerContext.boot(settings, "t1", store=store)
    results = {rel: run_and_record(ctx, job, it) for rel, it in rows.items()}
    assert not dead.exists()  # cleared when this process made its own scratch folder
    assert results["Zebra/corrupt.jpg"].status == "failed" and "corrupt" in (results["Zebra/corrupt.jpg"].message or "")
    assert all(r.status == "done" for k, r in results.items() if "corrupt" not in k)
    cands = candidate_rows(store, job.id or 0)
    objects = _objects(fs, job.results_dir.removeprefix("s3://"))
    masks = [o for o in objects if o.endswith(".png")]
    # the chosen mask of each photo is uploaded; every candidate is an RLE in the store
    assert len(masks) == 3 and len(cands) == 6 and sum(o.endswith("choice.json") for o in objects) == 3
    with store.session() as s:
        stored = repo.item_candidates(s, job.id or 0)
    for _, c in stored:
        assert c.rle is not None and bool(c.mask_path) == c.is_choice
        assert not c.mask_path or (c.mask_path.startswith(job.results_dir + "/")
                                   and c.mask_path.removeprefix("s3://") in masks)
    item, first = next((i, c) for i, c in stored if c.mask_path)
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
    assert gone.message == ("s3://photos/archive/Zebra/gone.jpg does not exist; upload it, or fix the URL or "
                            "manifest row that names it, then `gloper retry-failed JOB`")
    assert "testing-secret" not in (gone.message or "")
    ctx.close()

    # kinds that read a folder say which kind reads a prefix
    from gloper_jobs.jobs.kinds import SubmitRequest, get_kind

    with pytest.raises(StorageError, match="only `submit extract` reads an s3:// prefix"):
        get_kind("evaluate").record(store, settings, SubmitRequest("s3://photos/archive", "kmeans"))
    store.dispose()


def test_a_calibration_uploads_its_masks_to_an_s3_results_prefix(s3: tuple[dict[str, str], s3fs.S3FileSystem],
                                                                  tmp_path: Path, synthetic_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration's items write through the same seam as an extract job's: with
    GLOPER_RESULTS_DIR=s3://... every (photo, setting) gets its objects under
    ``<results>/<photo>/setting-<k>/`` and nothing is written to a local folder."""
    from gloper_jobs.jobs.calibration import parse_grid
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.kinds.calibrate import record_calibrate_job
    from gloper_jobs.jobs.recording import run_and_record
    from gloper_jobs.store import repository as repo

    _, fs = s3
    monkeypatch.chdir(tmp_path)  # a URL taken for a folder would appear here, as s3:/...
    settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'c.db'}", results_dir="s3://results/cal",
                                 device="cpu", staging_dir=tmp_path / "staging")
    store = Store(settings.database_url)
    sub = record_calibrate_job(store, settings, synthetic_dir, parse_grid(["size=32,64"], {}, "kmeans"),
                               foreground=False, method="kmeans")
    ctx = WorkerContext.boot(settings, "t", preload=False, store=store)
    rows = items(store, sub.job.id or 0)
    assert len(rows) == 8 and {run_and_record(ctx, sub.job, it).status for it in rows.values()} == {"done"}
    ctx.close()
    prefix = sub.job.results_dir.removeprefix("s3://")
    choices = [o for o in _objects(fs, prefix) if o.endswith("/choice.json")]
    assert sorted(c.removeprefix(prefix + "/").rsplit("/", 2)[1] for c in choices) == ["setting-0"] * 4 + ["setting-1"] * 4
    with store.session() as s:
        chosen = [c for _, c in repo.item_candidates(s, sub.job.id or 0) if c.is_choice]
    assert len(chosen) == 8 and all(c.mask_path.startswith(sub.job.results_dir + "/") for c in chosen)
    assert not (tmp_path / "s3:").exists() and list((tmp_path / "staging").rglob("*.*")) == []
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


def _node(root: Path, models_dir: Path, name: str) -> tuple[Path, dict[str, str]]:
    """A folder of a node's own: working folder, HOME, staging, caches and its own copy of the
    foreground weights; nothing in it is seen by another node."""
    node = root / name
    home = node / "home"
    home.mkdir(parents=True)
    shutil.copytree(models_dir, home / ".u2net")
    env = {"HOME": str(home), "GLOPER_MODELS_DIR": str(home / ".u2net"), "U2NET_HOME": str(home / ".u2net"),
           "GLOPER_STAGING_DIR": str(node / "staging"), "GLOPER_WEIGHTS_DIR": str(node / "cache"),
           "GLOPER_COMPILE_CACHE_DIR": str(node / "cache" / "compile"), "XDG_CACHE_HOME": str(node / "cache"),
           "MPLCONFIGDIR": str(node / "cache" / "mpl"), "TMPDIR": str(node / "tmp")}
    (node / "tmp").mkdir()
    return node, env


@pytest.mark.queue
def test_two_workers_sharing_no_folder_process_an_archive_that_lives_in_s3(
        s3: tuple[dict[str, str], s3fs.S3FileSystem], database_url: str, broker_url: str, tmp_path: Path,
        models_dir: Path, examples_dir: Path) -> None:
    import time

    from gloper_jobs.data.rle import decode
    from gloper_jobs.testbed.cluster import Cluster
    from tests.outputs_helpers import gloper

    aws, fs = s3
    submitter = tmp_path / "submitter"
    submitter.mkdir()
    cluster = Cluster(database_url, broker_url, submitter, extra_env={**aws, "GLOPER_RESULTS_DIR": "s3://results/masks"})
    t0 = time.monotonic()
    job = int(cluster.gloper("submit", "extract", "s3://photos/archive", "--method", "kmeans").stdout.split()[-1])
    man = int(cluster.gloper("submit", "extract", "s3://photos/archive", "--method", "kmeans",
                             "--manifest", "s3://photos/manifests/m.csv").stdout.split()[-1])
    submitted = time.monotonic() - t0
    store = cluster.store()
    nodes = [_node(tmp_path, models_dir, n) for n in ("node-a", "node-b")]
    try:
        for (folder, env), name in zip(nodes, ("a", "b"), strict=True):
            cluster.start_worker(name, "--concurrency", "1", env=env, cwd=folder)
        t1 = time.monotonic()
        cluster.wait_for(lambda: drained(store, job) and drained(store, man), 400, "both jobs to drain")
        drained_s = time.monotonic() - t1
    finally:
        cluster.stop()
    n_photos = sum(1 for sp in SPECIES for p in (examples_dir / sp).iterdir() if p.is_file())
    assert counts(store, job) == {"done": n_photos, "failed": 1}
    assert counts(store, man) == {"done": 1, "failed": 1}
    rows = items(store, job)
    workers = {r.worker.split("@")[0] for r in rows.values() if r.worker}
    assert workers <= {"a", "b"} and rows["Zebra/corrupt.jpg"].error and "corrupt" in rows["Zebra/corrupt.jpg"].error
    assert "does not exist; upload it," in (items(store, man)["Zebra/gone.jpg"].error or "")
    assert all(n == 1 for _, _, n in candidate_rows(store, job))
    from gloper_jobs.store import repository as repo

    with store.session() as s:
        the_job = repo.get_job(s, job)
        stored = repo.item_candidates(s, job)
    masks = [o for o in _objects(fs, the_job.results_dir.removeprefix("s3://")) if o.endswith(".png")]
    # one object per photo (its chosen mask); every candidate is an RLE in the store
    written = [c for _, c in stored if c.mask_path]
    assert len(masks) == len(written) == len({i.id for i, _ in stored}) and all(c.rle for _, c in stored)
    assert all(c.mask_path.removeprefix("s3://") in masks for c in written)
    # nothing went to a local results folder, and each node's scratch holds no photo or mask any more
    for folder, _ in nodes:
        assert not (folder / "results").exists() and not (folder / "gloper-results").exists()
        assert [p for p in (folder / "staging").rglob("*") if p.is_file()] == []
    assert not (submitter / "results").exists()

    # a third machine with only the store's URL and the AWS variables exports and reports
    third = tmp_path / "third"
    (third / "home").mkdir(parents=True)
    env = {**aws, "HOME": str(third / "home"), "GLOPER_DATABASE_URL": database_url,
           "GLOPER_RESULTS_DIR": str(third / "nothing-here")}
    r = gloper("export", str(job), "--format", "parquet", "--out", "s3://results/exports/masks.parquet",
               env=env, cwd=third)
    assert r.returncode == 0, r.stderr
    fs.invalidate_cache()
    df = pd.read_parquet(io.BytesIO(fs.cat_file("results/exports/masks.parquet")))
    assert sorted(df["path"]) == sorted(rows)
    done = df[df["status"] == "done"]
    assert sorted(done["path"]) == sorted(k for k, v in rows.items() if v.status == "done")
    assert done["error"].isna().all()  # every mask was read back from S3
    for row in done.itertuples():
        mask = decode(row.mask_rle_counts, row.mask_height, row.mask_width)
        assert mask.shape == (rows[row.path].height, rows[row.path].width)
        assert np.array_equal(mask, read_mask(f"{the_job.results_dir}/{row.path}/{row.choice}.png"))
    r = gloper("report", str(job), "--html", "s3://results/report.html", env=env, cwd=third)
    assert r.returncode == 0, r.stderr
    page = fs.cat_file("results/report.html").decode()
    assert page.count("data:image/jpeg") >= n_photos and "cannot show this photo" not in page
    assert not (third / "nothing-here").exists()
    assert "testing-secret" not in r.stdout + r.stderr + cluster.logs()
    print(f"submit (2 jobs) {submitted:.1f} s, drained {drained_s:.1f} s after the workers started")


def test_dataset_model_trains_into_s3_and_each_worker_caches_it_by_checksum(
        s3: tuple[dict[str, str], s3fs.S3FileSystem], tmp_path: Path, synthetic_dir: Path) -> None:
    from gloper_jobs.jobs.spec import job_spec
    from gloper_jobs.methods.registry import build_segmenter
    from gloper_jobs.store.model_registry import get_model
    from tests.outputs_helpers import gloper

    aws, fs = s3
    db = f"sqlite:///{tmp_path / 'models.db'}"
    env = {**aws, "GLOPER_DATABASE_URL": db, "GLOPER_DEVICE": "cpu", "GLOPER_STAGING_DIR": str(tmp_path / "train"),
           "GLOPER_RESULTS_DIR": str(tmp_path / "res")}
    tiny = ["--param=size=32", "--param=local_sizes=4,8", "--param=batch=2", "--param=checkpoint_every=1"]
    url = "s3://results/models/syn.pt"
    r = gloper("train", str(synthetic_dir), "--out", url, "--model", "syn", *tiny, "--param=steps=2",
               "--no-foreground", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    fs.invalidate_cache()
    store = Store(db)
    with store.session() as s:
        model = get_model(s, "syn")
    assert model.checkpoint_path == url and model.step == 2  # the store keeps the URL
    first = fs.cat_file("results/models/syn.pt")
    assert model.sha256 and len(first) > 1000

    params = {"model": "syn", "size": "32", "local_sizes": "4,8", "device": "cpu"}
    a = Settings.from_env(database_url=db, weights_dir=tmp_path / "node-a", device="cpu")
    with store.session() as s:  # the model's name is looked up in the caller's session
        spec = job_spec(a, synthetic_dir, "gloper", None, params, foreground=False, session=s)
    assert spec.params["model"] == url  # what the workers get: the URL, not the submitter's cache
    seg = build_segmenter("gloper", a, None, spec.params)
    cached = sorted((tmp_path / "node-a" / "models").iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == first and seg.params.model == str(cached[0])
    stamp = cached[0].stat().st_mtime_ns
    build_segmenter("gloper", a, None, spec.params)  # the same version: not fetched again
    assert cached[0].stat().st_mtime_ns == stamp
    b = Settings.from_env(database_url=db, weights_dir=tmp_path / "node-b", device="cpu")
    build_segmenter("gloper", b, None, spec.params)  # another node: its own copy
    assert [p.read_bytes() for p in (tmp_path / "node-b" / "models").iterdir()] == [first]

    # training on continues from the object (no local copy on this machine) and uploads the new version
    shutil.rmtree(tmp_path / "train")
    r = gloper("train", str(synthetic_dir), "--out", url, *tiny, "--param=steps=3", "--no-foreground",
               "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "step 3 (1 this run, from 2)" in r.stdout
    build_segmenter("gloper", a, None, spec.params)
    assert len(list((tmp_path / "node-a" / "models").iterdir())) == 2  # a new version, a new cache entry
    with pytest.raises(StorageError, match="does not exist"):
        build_segmenter("gloper", a, None, {**params, "model": "s3://results/models/nope.pt"})
    store.dispose()


def test_a_worker_refuses_to_boot_without_its_results_bucket(s3: tuple[dict[str, str], s3fs.S3FileSystem],
                                                             tmp_path: Path, models_dir: Path) -> None:
    from workers.runtime import boot_checks

    base = {"database_url": f"sqlite:///{tmp_path / 'b.db'}", "models_dir": models_dir}
    boot_checks(Settings.from_env(**base, results_dir="s3://results/masks"))  # exists: boots
    with pytest.raises(StorageError, match="the bucket 'no-such-bucket' does not exist .* fix GLOPER_RESULTS_DIR"):
        boot_checks(Settings.from_env(**base, results_dir="s3://no-such-bucket/masks"))


def test_an_unreachable_store_is_retried_and_the_photo_is_not_lost(
        s3: tuple[dict[str, str], s3fs.S3FileSystem], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.execution import execute_item
    from gloper_jobs.jobs.kinds.extract import record_extract_job
    from gloper_jobs.jobs.publishing import enqueue_unfinished
    from gloper_jobs.testbed.services import free_port

    settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'u.db'}", results_dir="s3://results/masks",
                                 device="cpu", staging_dir=tmp_path / "staging", max_retries=2)
    store = Store(settings.database_url)
    sub = record_extract_job(store, settings, "s3://photos/archive", "kmeans", foreground=False)
    ids: list[int] = []
    enqueue_unfinished(store, sub.job, lambda job, chunk: ids.extend(chunk) or len(chunk), batch=100)
    ctx = WorkerContext.boot(settings, "t", preload=False, store=store)
    # the endpoint goes away (nothing listens on this loopback port): transient, the item is released
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    s3fs.S3FileSystem.clear_instance_cache()
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="throttling or unreachable"):
        execute_item(ctx, ids[0], retries=0)
    took = time.monotonic() - t0
    item = items(store, sub.job.id or 0)
    (rel,) = [k for k, v in item.items() if v.id == ids[0]]
    assert item[rel].status == "queued" and "unreachable" in (item[rel].error or "")
    # the endpoint is back: the retry (the task layer's) finishes the item
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3[0]["AWS_ENDPOINT_URL"])
    s3fs.S3FileSystem.clear_instance_cache()
    assert execute_item(ctx, ids[0], retries=1).status == "done"
    assert items(store, sub.job.id or 0)[rel].status == "done"
    print(f"unreachable endpoint reported after {took:.1f} s of s3fs/botocore retries")
    ctx.close()


def test_a_queued_model_training_writes_its_checkpoint_to_the_results_bucket(
        s3: tuple[dict[str, str], s3fs.S3FileSystem], tmp_path: Path, synthetic_dir: Path) -> None:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.kinds import SubmitRequest, get_kind
    from gloper_jobs.jobs.recording import run_and_record
    from gloper_jobs.methods.gloper.dataset_model.checkpoint import file_sha256
    from gloper_jobs.store.model_registry import get_model

    _, fs = s3
    settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'm.db'}", results_dir="s3://results/masks",
                                 device="cpu", staging_dir=tmp_path / "staging", weights_dir=tmp_path / "cache")
    store = Store(settings.database_url)
    params = {"size": "32", "local_sizes": "4,8", "batch": "2", "checkpoint_every": "1", "steps": "2"}
    sub = get_kind("train").record(store, settings, SubmitRequest(synthetic_dir, "gloper", params=params,
                                                                  foreground=False, model="m"))
    with store.session() as s:
        assert get_model(s, "m").checkpoint_path == "s3://results/masks/models/m.pt"
    ctx = WorkerContext.boot(settings, preload=False, store=store)
    (item,) = items(store, sub.job.id or 0).values()
    assert run_and_record(ctx, sub.job, item).status == "done"
    ctx.close()
    with store.session() as s:
        model = get_model(s, "m")
    fs.invalidate_cache()
    local = tmp_path / "object.pt"
    local.write_bytes(fs.cat_file("results/masks/models/m.pt"))
    assert model.step == 2 and model.status == "done" and model.sha256 == file_sha256(local)  # the last one went up
    store.dispose()


def test_results_dir_url_keeps_its_slashes_and_other_schemes_are_refused() -> None:
    s = Settings.from_env(results_dir="s3://bucket/a//b/")
    assert s.results_url == "s3://bucket/a//b" and s.results_root == "s3://bucket/a//b"
    assert Settings.from_env(results_dir="/tmp/r").results_url is None
    from gloper_jobs.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="GLOPER_RESULTS_DIR: gs://b/r: unsupported storage scheme 'gs'"):
        Settings.from_env(results_dir="gs://b/r")


def test_a_denied_key_fails_the_item_saying_what_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          examples_dir: Path) -> None:
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.kinds.extract import record_extract_job
    from gloper_jobs.jobs.recording import run_and_record
    from tests.s3_server import moto_s3_with_auth

    with moto_s3_with_auth(tmp_path) as env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'd.db'}", results_dir=tmp_path / "res",
                                     device="cpu", staging_dir=tmp_path / "staging")
        store = Store(settings.database_url)
        with pytest.raises(StorageError, match="access denied .* s3:ListBucket on bucket 'photos'"):
            record_extract_job(store, settings, "s3://photos/archive", "kmeans", foreground=False)  # submit
        manifest = tmp_path / "m.csv"  # a local manifest naming its labels: no listing at submission
        pd.DataFrame({"path": ["Tiger/a.jpg"], "label_path": ["Tiger/label/a.jpg"]}).to_csv(manifest, index=False)
        sub = record_extract_job(store, settings, "s3://photos/archive", "kmeans", foreground=False, manifest=manifest)
        ctx = WorkerContext.boot(settings, "t", preload=False, store=store)
        (item,) = items(store, sub.job.id or 0).values()
        result = run_and_record(ctx, sub.job, item)
        ctx.close()
        s3fs.S3FileSystem.clear_instance_cache()
    assert result.status == "failed"
    message = result.message or ""
    assert message.startswith("s3://photos/archive/Tiger/a.jpg: access denied") and "retry-failed" in message
    assert "revoked-secret" not in message and "AKIAREVOKEDKEY" not in message
    store.dispose()
