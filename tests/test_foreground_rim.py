"""The foreground's rim: the band along the outline no mask keeps, per job, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import inspect, text

from gloper_jobs import defaults
from gloper_jobs.data.images import resize_mask
from gloper_jobs.data.outputs import candidate_mask
from gloper_jobs.exceptions import ConfigurationError
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.foreground.rim import inner_foreground, trim_rim
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.settings import Settings
from gloper_jobs.store import Job, Store
from gloper_jobs.store import repository as repo

KERNEL = np.ones((3, 3), np.uint8)


def _blobs(seed: int, side: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fg = np.zeros((side, side), np.uint8)
    for _ in range(3):
        centre = (int(rng.integers(0, side)), int(rng.integers(0, side)))
        axes = (int(rng.integers(10, side // 2)), int(rng.integers(10, side // 2)))
        cv2.ellipse(fg, centre, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
    return fg.astype(bool) | (rng.random((side, side)) < 0.005)  # specks, as u2netp leaves


@pytest.mark.parametrize("seed", range(6))
def test_an_integer_rim_is_that_many_3x3_erosions(seed: int) -> None:
    """What was measured (the retired bench.readout_variants' erode=K, docs/benchmarks.md) is what runs: K pixels at 256."""
    fg = _blobs(seed)
    for k in (1, 2, 3, 4):
        want = cv2.erode(fg.astype(np.uint8), KERNEL, iterations=k).astype(bool)
        assert np.array_equal(inner_foreground(fg, fg.shape, k / 256), want), k
    # the default is 3 px at 256, and scales with the mask: 1.5 px at 128 keeps distance >= 2
    assert np.array_equal(inner_foreground(fg, fg.shape, defaults.FOREGROUND_RIM),
                          cv2.erode(fg.astype(np.uint8), KERNEL, iterations=3).astype(bool))
    small = resize_mask(fg, (128, 128))
    assert np.array_equal(inner_foreground(fg, (128, 128), defaults.FOREGROUND_RIM),
                          cv2.erode(small.astype(np.uint8), KERNEL, iterations=1).astype(bool))


def test_the_frame_edge_is_no_outline_and_degenerate_foregrounds_trim_nothing() -> None:
    fg = np.zeros((256, 256), bool)
    fg[100:, :] = True  # an animal cut by the bottom and the sides of the frame
    inner = inner_foreground(fg, fg.shape, 3 / 256)
    assert inner[255].all() and inner[200, 0] and inner[200, 255]  # frame edges kept
    assert not inner[100:103].any() and inner[103:].all()  # three rows off its top outline
    whole = np.ones((64, 80), bool)
    assert inner_foreground(whole, whole.shape, 0.1).all()
    assert not inner_foreground(~whole, whole.shape, 0.1).any()
    masks = {"a": np.ones((256, 256), bool), "b": np.ones((128, 128), bool)}
    assert trim_rim(masks, fg, 0.0) is masks
    trimmed = trim_rim(masks, fg, 3 / 256)
    assert np.array_equal(trimmed["a"], inner) and trimmed["b"].shape == (128, 128)
    assert not trimmed["b"][49, 60] and trimmed["b"][60, 60]  # the band at the mask's own side


def test_settings_refuse_a_rim_that_is_no_share_of_the_side(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (-0.01, 0.25, 3):
        with pytest.raises(ConfigurationError, match="GLOPER_FOREGROUND_RIM: .*share of the side"):
            Settings.from_env(foreground_rim=bad)
    monkeypatch.setenv("GLOPER_FOREGROUND_RIM", "3px")
    with pytest.raises(ConfigurationError, match="GLOPER_FOREGROUND_RIM"):
        Settings.from_env()
    monkeypatch.setenv("GLOPER_FOREGROUND_RIM", "0.02")
    assert Settings.from_env().foreground_rim == 0.02
    monkeypatch.delenv("GLOPER_FOREGROUND_RIM")
    assert Settings.from_env().foreground_rim == defaults.FOREGROUND_RIM
    assert Settings.from_env(foreground_rim=0).foreground_rim == 0


def test_a_runs_masks_keep_nothing_of_the_rim_and_the_job_records_it(
        tmp_path: Path, settings: Settings, examples_dir: Path, foreground: ForegroundExtractor) -> None:
    """Through a real run with u2netp: every candidate, of both runs, is the untrimmed one less
    the band; the rim is part of the job (another job, its report says so), and on the cows
    photo, whose darker reading takes in the dark outline, the chosen mask scores higher."""
    settings = settings.model_copy(update={"decode": "full"})  # the photo as load_image reads it, below
    data = tmp_path / "data"
    shutil.copytree(examples_dir / "Cows", data / "Cows")
    plain = run_dataset(data, "kmeans", settings.model_copy(update={"foreground_rim": 0.0}), progress=False)
    rimmed = run_dataset(data, "kmeans", settings, progress=False)
    assert plain.processed == rimmed.processed == 1 and rimmed.created  # another job, not a resume
    assert plain.job.foreground_rim == 0 and rimmed.job.foreground_rim == defaults.FOREGROUND_RIM
    assert "rim" in rimmed.report and "rim" not in plain.report
    store = Store(settings.database_url)
    with store.session() as s:
        before = {c.name: (i, c) for i, c in repo.item_candidates(s, repo.require_id(plain.job))}
        after = {c.name: (i, c) for i, c in repo.item_candidates(s, repo.require_id(rimmed.job))}
    assert before.keys() == after.keys() and len(after) == 2
    from gloper_jobs.data.images import load_image

    image = load_image(next((data / "Cows").glob("*.png")))
    fg = foreground(image).mask
    for name, (_item, cand) in after.items():
        side = (256, 256)  # k-means' working size: the RLE's shape
        got = candidate_mask("", cand.rle, side)
        untrimmed = candidate_mask("", before[name][1].rle, side)
        assert np.array_equal(got, untrimmed & inner_foreground(fg, side, defaults.FOREGROUND_RIM)), name
        assert (untrimmed & ~got).any(), name  # the band held mask pixels
        if cand.is_choice:
            assert cand.dice > before[name][1].dice, (cand.dice, before[name][1].dice)

    # a worker whose settings trim runs the old job's photo again as that job was made: untrimmed
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.execution import execute_item

    item_id = repo.require_id(next(iter(before.values()))[0])
    with store.session() as s:
        assert repo.reset_items(s, repo.require_id(plain.job), ["done"]) == 1
        s.commit()
    ctx = WorkerContext.boot(settings, store=store)
    assert ctx.settings.foreground_rim == defaults.FOREGROUND_RIM
    assert execute_item(ctx, item_id).status == "done"
    with store.session() as s:
        again = {c.name: c.rle for _, c in repo.item_candidates(s, repo.require_id(plain.job))}
    assert again == {name: c.rle for name, (_, c) in before.items()}


def test_jobs_made_before_the_rim_keep_their_key_and_resume_untrimmed(tmp_path: Path) -> None:
    """Migration 0011 gives old jobs rim 0, and a spec with rim 0 hashes as before, so
    resubmitting an old job finds it and its remaining photos are made as the first were."""
    from alembic import command

    from gloper_jobs.store.db import _alembic_config, make_engine

    spec = repo.JobSpec(kind="extract", dataset="/data/a", method="kmeans", params={"size": 64},
                        profile=None, foreground_model="u2netp", eval_size=256, results_root="/tmp/r")
    old_key = repo.job_key("extract", "/data/a", {"method": "kmeans", "params": {"size": 64},
                                                  "foreground_model": "u2netp", "eval_size": 256})
    assert spec.key == old_key
    from dataclasses import replace

    assert replace(spec, foreground_rim=defaults.FOREGROUND_RIM).key != old_key

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0010")
    with engine.begin() as conn:
        conn.execute(text(
            "insert into job (key, kind, dataset, method, params, foreground_model, eval_size, status, "
            "results_dir, n_items, priority, created_at, updated_at) values (:key, 'extract', '/data/a', "
            "'kmeans', '{\"size\": 64}', 'u2netp', 256, 'running', '/tmp/r/job-00001-kmeans', 0, 'normal', "
            "'2026-12-01 00:00:00', '2026-12-01 00:00:00')"), {"key": old_key})
    command.upgrade(cfg, "0011")
    assert "foreground_rim" in {c["name"] for c in inspect(engine).get_columns("job")}
    store = Store(url)
    with store.session() as s:
        job, created = repo.get_or_create_job(s, spec)
        assert not created and job.foreground_rim == 0 and job.key == old_key
        assert s.get(Job, job.id) is job
    command.downgrade(cfg, "0010")
    assert "foreground_rim" not in {c["name"] for c in inspect(engine).get_columns("job")}
    engine.dispose()


def test_a_new_job_that_an_unfinished_one_matches_but_for_the_rim_says_how_to_resume_that_one(
        tmp_path: Path, settings: Settings, synthetic_dir: Path) -> None:
    """Rerunning an interrupted archive after the rim's default changed makes a new job: the
    user is told, before it runs, which job and which setting would resume the old one."""
    import warnings

    old = run_dataset(synthetic_dir, "kmeans", settings.model_copy(update={"foreground_rim": 0.0}),
                      params={"size": 64}, progress=False, limit=1)
    assert old.job.status != "done"
    with pytest.warns(UserWarning, match=rf"job {old.job.id} .* unfinished .* rim of 0 .* "
                                         r"GLOPER_FOREGROUND_RIM=0$"):
        new = run_dataset(synthetic_dir, "kmeans", settings, params={"size": 64}, progress=False)
    assert new.created and new.job.id != old.job.id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # resuming either job, or a finished one, warns no more
        run_dataset(synthetic_dir, "kmeans", settings, params={"size": 64}, progress=False)
        run_dataset(synthetic_dir, "kmeans", settings.model_copy(update={"foreground_rim": 0.0}),
                    params={"size": 64}, progress=False)
        # other settings are another job, not the same job under another rim
        run_dataset(synthetic_dir, "kmeans", settings.model_copy(update={"foreground_rim": 0.02}),
                    params={"size": 32}, progress=False)
    with pytest.warns(UserWarning, match="GLOPER_FOREGROUND_RIM=0.0117"):  # a calibration likewise
        from gloper_jobs.jobs.calibration import parse_grid
        from gloper_jobs.jobs.kinds.calibrate import record_calibrate_job

        store = Store(settings.database_url)
        grid = parse_grid([], {"size": 64}, "kmeans")
        record_calibrate_job(store, settings, synthetic_dir, grid, method="kmeans")
        record_calibrate_job(store, settings.model_copy(update={"foreground_rim": 0.02}), synthetic_dir, grid,
                             method="kmeans")


def test_applying_a_calibration_made_on_other_masks_says_what_differs(
        tmp_path: Path, settings: Settings, synthetic_dir: Path) -> None:
    import warnings

    plain = settings.model_copy(update={"foreground_rim": 0.0})
    cal = run_dataset(synthetic_dir, "kmeans", plain, params={"size": 64}, progress=False, kind="calibrate")
    assert cal.job.status == "done" and cal.job.foreground_rim == 0
    with pytest.warns(UserWarning, match=rf"calibration {cal.job.id} scored its settings on masks of foreground "
                                         r"u2netp less a rim of 0; this job uses foreground u2netp less 0.0117"):
        run_dataset(synthetic_dir, "kmeans", settings, params={"size": 64}, progress=False,
                    settings_from=cal.job.id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # made as it was calibrated: nothing to say
        run_dataset(synthetic_dir, "kmeans", plain, params={"size": 64}, progress=False, settings_from=cal.job.id)
