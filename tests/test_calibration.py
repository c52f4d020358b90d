"""Calibration jobs: the grid, one item per (photo, setting), the best settings per
species stored, and extract jobs that use them. Runs the real execute_item on SQLite; the
Celery task is the same thin call (tests/test_queue_e2e.py drives tasks through real workers)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlmodel import col, select

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.exceptions import DatasetError, InvalidParameterError, JobNotFoundError
from gloper_jobs.jobs.calibration import SETTING_MARK, format_calibration, parse_grid
from gloper_jobs.jobs.context import WorkerContext
from gloper_jobs.jobs.execution import execute_item
from gloper_jobs.jobs.kinds.calibrate import record_calibrate_job
from gloper_jobs.jobs.kinds.extract import record_extract_job
from gloper_jobs.jobs.submission import enqueue_unfinished
from gloper_jobs.methods.gloper.params import PER_PHOTO_TRAINING, GloperParams
from gloper_jobs.settings import Settings
from gloper_jobs.store import Calibration, Candidate, Item, Job, Store

TINY = {"size": "32", "local_sizes": "4", "steps": "2"}


@pytest.fixture()
def qsettings(tmp_path: Path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path / 'c.db'}", results_dir=tmp_path / "res",
                             device="cpu")


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "photos", per_species=2, size=64)
    return tmp_path / "photos"


class Recorder:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def __call__(self, job: Job, ids: Sequence[int]) -> int:
        self.ids.extend(ids)
        return len(ids)


def _drain(store: Store, ctx: WorkerContext, job: Job) -> list[str]:
    pub = Recorder()
    enqueue_unfinished(store, job, pub, batch=100)
    return [execute_item(ctx, i).status for i in pub.ids]


def test_parse_grid() -> None:
    grid = parse_grid(["steps=2,3", "rho=0.4,0.6"], TINY)
    assert len(grid) == 4 and all(g["size"] == 32 and g["local_sizes"] == [4] for g in grid)
    assert {(g["steps"], g["rho"]) for g in grid} == {(2, 0.4), (2, 0.6), (3, 0.4), (3, 0.6)}
    sizes = parse_grid(["local_sizes=4;4,8"], {"size": "32", "steps": "2"})
    assert [g["local_sizes"] for g in sizes] == [[4], [4, 8]]
    assert len(parse_grid(["steps=2,2"], TINY)) == 1  # duplicates collapse
    with pytest.raises(InvalidParameterError, match="valid names"):
        parse_grid(["nope=1"])
    with pytest.raises(InvalidParameterError, match="steps"):
        parse_grid(["steps=0,2"], TINY)
    assert parse_grid([], TINY) == [parse_grid(["steps=2"], TINY)[0]]  # no axis: the base setting alone
    km = parse_grid(["k=2,3"], {"size": "64"}, method="kmeans")
    assert [(g["k"], g["size"]) for g in km] == [(2, 64), (3, 64)]
    with pytest.raises(InvalidParameterError, match="valid names.*attempts"):
        parse_grid(["rho=0.5"], method="kmeans")


def test_training_job_calibrates_each_species_and_extract_uses_it(qsettings: Settings, photos: Path) -> None:
    store = Store(qsettings.database_url)
    grid = parse_grid(["rho=0.2,0.5"], TINY)
    sub = record_calibrate_job(store, qsettings, photos, grid, foreground=False)
    assert sub.created and sub.added == 8 * 2 and sub.job.queue == "calibrate.gpu"
    assert record_calibrate_job(store, qsettings, photos, grid, foreground=False).added == 0
    with pytest.raises(JobNotFoundError, match="not finished"):
        record_extract_job(store, qsettings, photos, "gloper", params=TINY, foreground=False,
                           settings_from=sub.job.id)

    ctx = WorkerContext.boot(qsettings, "test", preload=False)
    assert set(_drain(store, ctx, sub.job)) == {"done"}
    with store.session() as s:
        assert s.get(Job, sub.job.id).status == "done"
        rows = {c.species: c for c in s.exec(select(Calibration).where(Calibration.job_id == sub.job.id)).all()}
        # recompute the expected winner from the stored scores: the best (setting, candidate)
        per: dict[str, dict[tuple[int, str], list[float]]] = defaultdict(lambda: defaultdict(list))
        for item, cand in s.exec(select(Item, Candidate).join(Candidate, col(Candidate.item_id) == col(Item.id))
                                 .where(Item.job_id == sub.job.id)).all():
            per[item.species][(int(item.rel_path.rpartition(SETTING_MARK)[2]), cand.name)].append(cand.dice)
    assert set(rows) == {"Patches", "Rosettes", "Spots", "Stripes"}
    for species, by_pair in per.items():
        means = {k: sum(v) / len(v) for k, v in by_pair.items()}
        best = max(means.values())
        p = rows[species].params
        name = p["choice"] + ("_lighter" if p["polarity"] == "lighter" else "")
        assert {k: v for k, v in p.items() if k not in ("choice", "polarity")} == {
            k: v for k, v in grid[0].items() if k not in ("choice", "polarity", "rho")} | {"rho": p["rho"]}
        assert means[(grid.index({**grid[0], "rho": p["rho"]}), name)] == pytest.approx(best)
        assert rows[species].dice == pytest.approx(best)
        assert rows[species].photos == 2 and rows[species].settings_tried == 2

    calls: list[tuple[str, dict]] = []
    real_get = ctx.segmenters.get

    def spy(method: str, profile: str | None = None, params: dict | None = None):  # type: ignore[no-untyped-def]
        calls.append((method, dict(params or {})))
        return real_get(method, profile, params)

    ctx.segmenters.get = spy  # type: ignore[method-assign]
    ext = record_extract_job(store, qsettings, photos, "gloper", params=TINY, foreground=False,
                             settings_from=sub.job.id)
    assert ext.job.params["settings_from"] == sub.job.id
    assert set(_drain(store, ctx, ext.job)) == {"done"}
    with store.session() as s:
        species_of = {i.id: i.species for i in s.exec(select(Item).where(Item.job_id == ext.job.id)).all()}
    assert len(calls) == len(species_of) == 8
    used = sorted({(p["rho"], p["choice"], p["polarity"]) for _, p in calls})
    assert used == sorted({(rows[sp].params["rho"], rows[sp].params["choice"], rows[sp].params["polarity"])
                           for sp in rows})
    for _, params in calls:
        assert "per_species" not in params and "settings_from" not in params
    with pytest.raises(InvalidParameterError, match="calibrated --method gloper"):
        record_extract_job(store, qsettings, photos, "kmeans", foreground=False, settings_from=sub.job.id)


def test_training_needs_labels(qsettings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "nolabels" / "Cat"
    folder.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (16, 16)).save(folder / "a.png")
    with pytest.raises(DatasetError, match="labelled"):
        record_calibrate_job(Store(qsettings.database_url), qsettings, tmp_path / "nolabels", parse_grid(["steps=2"], TINY))


def test_calibration_learns_polarity_and_settings_from_carries_it(qsettings: Settings, tmp_path: Path) -> None:
    # pale marks on a dark coat (<Kind>Light) need polarity=lighter; the others darker
    make_dataset(tmp_path / "both", per_species=1, size=96, polarity="both")
    store = Store(qsettings.database_url)
    grid = parse_grid(["polarity=darker,lighter"], TINY)
    assert [g["polarity"] for g in grid] == ["darker", "lighter"]
    sub = record_calibrate_job(store, qsettings, tmp_path / "both", grid, foreground=False)
    ctx = WorkerContext.boot(qsettings, "test", preload=False)
    assert set(_drain(store, ctx, sub.job)) == {"done"}
    with store.session() as s:
        learnt = {c.species: c.params["polarity"]
                  for c in s.exec(select(Calibration).where(Calibration.job_id == sub.job.id)).all()}
    assert learnt == {sp: "lighter" if sp.endswith("Light") else "darker" for sp in learnt} and len(learnt) == 8

    ext = record_extract_job(store, qsettings, tmp_path / "both", "gloper", params={**TINY, "polarity": "auto"},
                             foreground=False, settings_from=sub.job.id)
    assert set(_drain(store, ctx, ext.job)) == {"done"}
    with store.session() as s:
        items = s.exec(select(Item).where(Item.job_id == ext.job.id)).all()
        for item in items:
            polarity = item.info["polarity"]
            assert polarity["polarity"] == learnt[item.species] and polarity["rule"] == "fixed", item.rel_path
            choice = s.exec(select(Candidate).where(Candidate.item_id == item.id, col(Candidate.is_choice))).one()
            assert choice.name.endswith("_lighter") == (learnt[item.species] == "lighter")
    assert len(items) == 8


def test_calibration_table_warns_when_settings_were_picked_from_few_photos() -> None:
    def row(species: str, photos: int, tried: int) -> Calibration:
        return Calibration(job_id=1, species=species, params={"rho": 0.6, "choice": "local_16"}, dice=0.8,
                           photos=photos, settings_tried=tried)

    few = format_calibration([row("Cat", 1, 3), row("Zebra", 2, 3), row("Seal", 5, 3)])
    note = few.splitlines()[-1]
    assert note.startswith("note: Cat, Zebra chose among 3 settings from fewer than 3 photos")
    assert "Seal" not in note and "--grid rho=0.5" in note
    assert format_calibration([row("Cat", 1, 3), row("Zebra", 2, 3)]).splitlines()[-1].startswith(
        "note: every species chose among 3 settings")
    # one setting (the mask and polarity only), or enough photos: nothing to warn about
    assert "note:" not in format_calibration([row("Cat", 1, 1), row("Seal", 3, 3)])


def test_calibration_table_leaves_out_what_a_dataset_model_does_not_use() -> None:
    """A dataset model's calibration stores the per-photo training settings in its grid (they
    are GloPER's identity); the table shows only the settings that act."""
    base = GloperParams.build(model="M.pt", size=256, local_sizes="16,32").identity()
    rows = [Calibration(job_id=1, species=sp, params={**base, "rho": rho, "polarity": pol}, dice=0.7,
                        photos=3, settings_tried=1) for sp, rho, pol in (("Cat", 0.5, "darker"), ("Seal", 0.6, "lighter"))]
    table = format_calibration(rows)
    shared = table.splitlines()[0]
    assert "model=M.pt" in shared and "size=256" in shared and "local_sizes=[16, 32]" in shared
    for unused in PER_PHOTO_TRAINING:  # (finetune_steps=0 acts: it is no per-photo training)
        assert not re.search(rf"(: |, ){unused}=", table), unused
    assert "rho=0.6, polarity=lighter" in table.splitlines()[3]
    # fine-tuning uses the seed; per-photo GloPER uses every training setting
    assert GloperParams.idle({**base, "finetune_steps": 10}) == frozenset(PER_PHOTO_TRAINING) - {"seed"}
    per_photo = GloperParams.build().identity()
    assert GloperParams.idle(per_photo) == frozenset()
    assert all(re.search(rf"(: |, ){k}=", format_calibration([replace_params(rows[0], per_photo)]))
               for k in PER_PHOTO_TRAINING)
    assert format_calibration([replace_params(rows[0], {"k": 2})], "kmeans").startswith("settings of every species: k=2")


def replace_params(row: Calibration, params: dict[str, object]) -> Calibration:
    return Calibration(job_id=row.job_id, species=row.species, params=params, dice=row.dice, photos=row.photos,
                       settings_tried=row.settings_tried)
