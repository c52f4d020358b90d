"""Settling a species and re-pointing its photos as a step of its own: resumable after a
kill in the middle, following a decision taken while it runs, saved as a calibration that
later jobs apply, shown in exports and by `gloper polarity --accept-suggestions`.

Embedded k-means runs on the synthetic set in both polarities (``<Kind>Light``: pale marks
on a dark coat, 3 photos a species), without foreground."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlmodel import col, select

from gloper_jobs.data.outputs import candidate_mask
from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.jobs import repointing
from gloper_jobs.jobs.polarity import (
    decide_species_polarity,
    mask_bases,
    reading_candidates,
    review_queue,
    save_as_calibration,
    settle_species,
)
from gloper_jobs.jobs.repointing import pending, repoint
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.settings import Settings
from gloper_jobs.store import Candidate, Item, Job, Store


@pytest.fixture()
def qsettings(tmp_path: Path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path / 'r.db'}", results_dir=tmp_path / "res",
                             device="cpu")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("both3")
    make_dataset(root, per_species=3, size=96, polarity="both")
    return root


def _state(store: Store, job_id: int) -> dict[str, str]:
    """rel_path -> chosen candidate, checking the store's one chosen row, choice.json and the
    chosen PNG (at the photo's size, equal to the stored RLE resized) agree."""
    out = {}
    with store.session() as s:
        for item in s.exec(select(Item).where(Item.job_id == job_id)).all():
            chosen = s.exec(select(Candidate).where(Candidate.item_id == item.id, col(Candidate.is_choice))).all()
            assert len(chosen) == 1 and chosen[0].name == item.choice, item.rel_path
            doc = json.loads((Path(chosen[0].mask_path).parent / "choice.json").read_text())
            assert doc["choice"] == item.choice and doc["mask"] == f"{item.choice}.png", item.rel_path
            with Image.open(chosen[0].mask_path) as png:
                assert png.size == (item.width, item.height)
            from_rle = candidate_mask("", chosen[0].rle, (item.height or 0, item.width or 0))
            assert (candidate_mask(chosen[0].mask_path, None) == from_rle).all(), item.rel_path
            out[item.rel_path] = chosen[0].name
    return out


def test_a_killed_repoint_finishes_when_started_again(qsettings: Settings, both: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(qsettings.database_url)
    job_id = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store).job.id
    assert job_id is not None
    light = sorted(p.name for p in both.iterdir() if p.name.endswith("Light"))
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and not pending(job)  # the drain's re-point ran (nothing to move)
        decide_species_polarity(s, job, dict.fromkeys(light, "lighter"), who="ana")
    real = repointing._repoint_page
    pages = {"n": 0}

    def dies_on_the_third_page(*args, **kwargs):  # type: ignore[no-untyped-def]
        pages["n"] += 1
        if pages["n"] == 3:
            raise KeyboardInterrupt("killed")  # as a kill between two pages' commits
        return real(*args, **kwargs)

    monkeypatch.setattr(repointing, "_repoint_page", dies_on_the_third_page)
    with pytest.raises(KeyboardInterrupt):
        repoint(store, job_id, batch=4)
    monkeypatch.setattr(repointing, "_repoint_page", real)
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and pending(job)
        half = job.species_polarity["repoint"]["items"]  # type: ignore[index]
    assert half == 8  # two pages of 4 committed before the kill
    midway = _state(store, job_id)  # every photo consistent, some re-pointed
    assert 0 < sum(c == "cluster_1" for c in midway.values()) < 3 * len(light)
    done = repoint(store, job_id, batch=4)
    assert done.finished and done.rounds == 1
    after = _state(store, job_id)
    assert {rel: c for rel, c in after.items()} == {
        rel: "cluster_1" if rel.split("/")[0] in light else "cluster_0" for rel in after}
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and not pending(job)
        calls = job.species_polarity["calls"]  # type: ignore[index]
        assert all(calls[sp]["repointed"] == 3 and calls[sp]["by"] == "ana" for sp in light)
    assert repoint(store, job_id).repointed == 0


def test_a_decision_during_a_repoint_is_followed_and_both_are_recorded(
        qsettings: Settings, both: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(qsettings.database_url)
    job_id = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store).job.id
    assert job_id is not None
    with store.session() as s:
        settle_species(s, job_id, "SpotsLight", "lighter", None, who="ana")
    real = repointing._repoint_page
    calls = {"n": 0}

    def meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:  # another browser decides while the first page runs
            with store.session() as s:
                settle_species(s, job_id, "SpotsLight", "darker", "polarity", who="ben")
        return real(*args, **kwargs)

    monkeypatch.setattr(repointing, "_repoint_page", meanwhile)
    done = repoint(store, job_id, batch=100)
    assert done.finished and done.rounds == 2  # went round again for the newer decision
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        history = job.species_polarity["decisions"]["SpotsLight"]  # type: ignore[index]
        call = job.species_polarity["calls"]["SpotsLight"]  # type: ignore[index]
    assert [(d["by"], d["polarity"]) for d in history] == [("ana", "lighter"), ("ben", "darker")]
    assert call["polarity"] == "darker" and call["by"] == "ben" and call["mask"] == "polarity"
    assert {c for rel, c in _state(store, job_id).items() if rel.startswith("SpotsLight/")} == {"cluster_0"}


def test_settling_one_species_reads_only_its_photos(qsettings: Settings, both: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from gloper_jobs.jobs import polarity

    store = Store(qsettings.database_url)
    job = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store).job
    before = job.species_polarity["calls"]  # type: ignore[index]
    read: list[str | None] = []
    real = polarity._done_items

    def recording(session, job_id, species=None):  # type: ignore[no-untyped-def]
        read.append(species)
        return real(session, job_id, species)

    monkeypatch.setattr(polarity, "_done_items", recording)
    with store.session() as s:
        call = settle_species(s, int(job.id or 0), "SpotsLight", "lighter", None, who="ana")
    assert read == ["SpotsLight"]  # a click on a 10^5-photo job reads one species, not the archive
    assert call["how"] == "person" and call["photos"] == 3 and call["suggestion"] is None
    with store.session() as s:
        after = s.get(Job, job.id).species_polarity["calls"]  # type: ignore[union-attr]
    assert {sp: c for sp, c in after.items() if sp != "SpotsLight"} == {
        sp: c for sp, c in before.items() if sp != "SpotsLight"}


def test_settle_refuses_what_the_job_does_not_have(qsettings: Settings, both: Path) -> None:
    store = Store(qsettings.database_url)
    job_id = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store).job.id
    assert job_id is not None
    with store.session() as s:
        with pytest.raises(InvalidParameterError, match="no photo of species 'Walrus'"):
            settle_species(s, job_id, "Walrus", "lighter", None, who="ana")
        with pytest.raises(InvalidParameterError, match="use darker or lighter"):
            settle_species(s, job_id, "Spots", "pale", None, who="ana")
        with pytest.raises(InvalidParameterError, match="not a candidate.*use one of polarity"):
            settle_species(s, job_id, "Spots", "lighter", "local_16", who="ana")
        with pytest.raises(InvalidParameterError, match="no species settled"):
            save_as_calibration(s, job_id, "ana")
        assert mask_bases(s, s.get(Job, job_id), "Spots") == ["polarity"]  # type: ignore[arg-type]
        item_id = s.exec(select(Item.id).where(Item.job_id == job_id)).first()
        assert reading_candidates(s, job_id, int(item_id or 0)) == {
            ("polarity", "darker"): "cluster_0", ("polarity", "lighter"): "cluster_1"}
        queue = review_queue(s, job_id)
    # the species whose photos suggest the other reading come first (photos x doubt, largest first)
    suggested = [r.call["suggestion"] is not None for r in queue]
    assert any(suggested) and suggested == sorted(suggested, reverse=True)
    assert [r.weight for r in queue] == sorted((r.weight for r in queue), reverse=True)
    assert all(r.weight == pytest.approx(r.photos * r.doubt) and r.photos == 3 for r in queue)
    assert {r.species for r in queue if r.call["suggestion"]} >= {"SpotsLight", "StripesLight"}


def test_decisions_saved_as_a_calibration_apply_to_a_later_job(qsettings: Settings, both: Path,
                                                                tmp_path: Path) -> None:
    from gloper_jobs.exports import export_jobs

    store = Store(qsettings.database_url)
    first = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store).job.id
    assert first is not None
    with store.session() as s:
        for sp in ("SpotsLight", "StripesLight"):
            settle_species(s, first, sp, "lighter", None, who="ana")
    repoint(store, first)
    with store.session() as s:
        cal_id = save_as_calibration(s, first, "ana")
    with store.session() as s:
        assert save_as_calibration(s, first, "ana") == cal_id  # the same decisions: the same calibration
        out = export_jobs(s, [first], "parquet", str(tmp_path / "m.parquet"))
    rows = pd.read_parquet(out.location).set_index("path")
    spots = rows[rows.species == "SpotsLight"]
    assert set(spots.polarity) == {"lighter"} and set(spots.polarity_how) == {"person"}
    assert set(spots.polarity_by) == {"ana"} and set(spots.choice) == {"cluster_1"}
    rest = rows[rows.species == "RosettesLight"]
    assert set(rest.polarity_how) == {"default"} and set(rest.polarity_suggestion) == {"lighter"}

    # a later job of the same method with --settings-from takes the two species' reading
    later = tmp_path / "later"
    make_dataset(later, per_species=2, size=96, seed=9, polarity="both")
    job = run_dataset(later, "kmeans", qsettings, foreground=False, progress=False, store=store,
                      settings_from=cal_id).job
    calls = job.species_polarity["calls"]  # type: ignore[index]
    assert calls["SpotsLight"]["how"] == "calibration" and calls["SpotsLight"]["polarity"] == "lighter"
    assert calls["Spots"]["how"] == "default"
    got = _state(store, int(job.id or 0))
    assert {c for rel, c in got.items() if rel.split("/")[0] in ("SpotsLight", "StripesLight")} == {"cluster_1"}


def test_polarity_command_accepts_the_suggestions_and_finishes_a_repoint(
        qsettings: Settings, both: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gloper_jobs.cli import main

    monkeypatch.setenv("GLOPER_DATABASE_URL", qsettings.database_url)
    monkeypatch.setenv("GLOPER_RESULTS_DIR", str(qsettings.results_dir))
    store = Store(qsettings.database_url)
    job = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store).job
    job_id = job.id
    suggested = {sp for sp, c in job.species_polarity["calls"].items() if c["suggestion"]}  # type: ignore[index]
    assert suggested and all(job.species_polarity["calls"][sp]["suggestion"]["polarity"] == "lighter"  # type: ignore[index]
                             for sp in suggested)
    res = CliRunner().invoke(main, ["polarity", str(job_id), "--accept-suggestions", "--by", "cara"])
    assert res.exit_code == 0, res.output
    assert f"re-pointed {3 * len(suggested)} of 24 photos" in res.output and "person: cara" in res.output
    got = _state(store, int(job_id or 0))
    assert {rel: c for rel, c in got.items()} == {
        rel: "cluster_1" if rel.split("/")[0] in suggested else "cluster_0" for rel in got}
    # an interrupted re-point is finished by the same command
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert "Spots" not in suggested
        decide_species_polarity(s, job, {"Spots": "lighter"}, who="cara")
    res = CliRunner().invoke(main, ["polarity", str(job_id)])
    assert res.exit_code == 0 and "re-pointed 3 of 24" in res.output, res.output
