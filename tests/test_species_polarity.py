"""Polarity per species and the label-light path: the vote when a job drains, re-pointed
choices (store and choice.json), overrides, `gloper calibrate` and `--settings-from`.

Embedded runs on the synthetic set in both polarities (``<Kind>Light``: pale marks on a
dark coat) without foreground; k-means for speed, GloPER with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from sqlmodel import col, select

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.jobs.polarity import (
    check_overrides,
    decide_species_polarity,
    format_species_polarity,
    parse_overrides,
    species_call,
)
from gloper_jobs.jobs.repointing import repoint
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES
from gloper_jobs.settings import Settings
from gloper_jobs.store import Candidate, Item, Job, Store

TINY = {"size": "32", "local_sizes": "4,8", "steps": "4"}


@pytest.fixture()
def qsettings(tmp_path: Path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path / 'p.db'}", results_dir=tmp_path / "res",
                             device="cpu")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("both")
    make_dataset(root, per_species=2, size=96, polarity="both")
    return root


def _choices(store: Store, job_id: int) -> dict[str, tuple[Item, str]]:
    """rel_path -> (item, the one candidate marked is_choice), checking choice.json agrees."""
    out = {}
    with store.session() as s:
        for item in s.exec(select(Item).where(Item.job_id == job_id)).all():
            chosen = s.exec(select(Candidate).where(Candidate.item_id == item.id, col(Candidate.is_choice))).all()
            assert len(chosen) == 1 and chosen[0].name == item.choice, item.rel_path
            doc = json.loads((Path(chosen[0].mask_path).parent / "choice.json").read_text())
            assert doc["choice"] == item.choice and doc["mask"] == f"{item.choice}.png"
            # the chosen mask is a full-resolution PNG, also after a re-pointing to a candidate
            # that was stored only as an RLE
            with Image.open(chosen[0].mask_path) as png:
                assert png.size == (item.width, item.height)
            out[item.rel_path] = (item, chosen[0].name)
    return out


def test_species_call_needs_a_clear_margin_to_leave_darker() -> None:
    assert species_call({"enclosed": [-0.5, -0.2]}, 0.1).polarity == "lighter"
    unclear = species_call({"enclosed": [-0.5, 0.45]}, 0.1)  # mean -0.025: keeps darker
    assert unclear.how == "unclear" and unclear.polarity == "darker"
    assert species_call({"enclosed": [0.3]}, 0.1).how == "vote" and species_call({}, 0.1).how == "unclear"
    # every rule must call lighter: a second rule that disagrees keeps darker
    both = species_call({"minority": [-0.3, -0.2], "enclosed": [-1.0, -0.9]}, 0.1)
    assert both.polarity == "lighter" and both.score == pytest.approx(-0.25)
    split = species_call({"minority": [0.2, 0.1], "enclosed": [-1.0, -1.0]}, 0.1)
    assert split.polarity == "darker" and split.how == "unclear"


def test_overrides_are_parsed_and_checked() -> None:
    assert parse_overrides(["Seal=lighter, Zebra=darker", "Cat=lighter"]) == {
        "Seal": "lighter", "Zebra": "darker", "Cat": "lighter"}
    for bad in ("Seal=pale", "Seal", "=lighter"):
        with pytest.raises(InvalidParameterError, match="SPECIES=darker"):
            parse_overrides(bad)
    with pytest.raises(InvalidParameterError, match="Walrus.*its species: Seal"):
        check_overrides({"Walrus": "lighter"}, {"Seal"})


def test_default_is_darker_with_the_vote_as_a_suggestion_and_a_person_settles_it(
        qsettings: Settings, both: Path) -> None:
    store = Store(qsettings.database_url)
    summary = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store)
    job_id = summary.job.id
    assert job_id is not None and summary.job.status == "done"
    calls = summary.job.species_polarity["calls"]  # type: ignore[index]
    assert set(calls) == {p.name for p in both.iterdir()}
    choices = _choices(store, job_id)
    for species, call in calls.items():  # the vote over the species' stored rule scores is only shown
        scores = {r: [it.info["polarity"]["rule_scores"][r]  # type: ignore[index]
                      for it, _ in choices.values() if it.species == species] for r in SPECIES_RULES}
        vote = species_call(scores, SPECIES_MARGIN)
        assert call["polarity"] == "darker" and call["how"] == "default" and call["photos"] == 2, species
        assert call["vote"] == (vote.polarity if vote.how == "vote" else "unclear"), species
        if vote.how == "vote" and vote.polarity == "lighter":
            assert call["suggestion"]["polarity"] == "lighter" and call["doubt"] >= 0.6, species
        else:
            assert call["suggestion"] is None and call["doubt"] <= 0.5, species
    assert calls["SpotsLight"]["suggestion"]["polarity"] == "lighter" and calls["Spots"]["suggestion"] is None
    for rel, (item, chosen) in choices.items():  # no species flipped by itself
        assert chosen == item.info["polarity"]["candidates"]["darker"], rel  # type: ignore[index]
    assert "polarity per species" in summary.report and "suggest lighter: review" in summary.report

    # a person settles two species: both photos of each re-pointed, in the store and in choice.json
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        decide_species_polarity(s, job, {"Spots": "lighter", "SpotsLight": "lighter"}, who="ana")
    done = repoint(store, job_id)
    assert done.finished and done.repointed == 4 and done.per_species == {"Spots": 2, "SpotsLight": 2}
    with store.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        call = job.species_polarity["calls"]["Spots"]  # type: ignore[index]
        assert call["how"] == "person" and call["by"] == "ana" and call["at"] and call["repointed"] == 2
        assert len(call["disagree"]) == 2 and job.species_polarity["calls"]["SpotsLight"]["suggestion"] is None  # type: ignore[index]
        assert job.species_polarity["repoint"]["state"] == "done"  # type: ignore[index]
        table = format_species_polarity(job)
        from gloper_jobs.reporting import render_html

        html = render_html(s, job)
        from gloper_jobs.jobs.progress import format_progress, job_progress

        status = format_progress(job_progress(s, job, 60))
    assert "polarity per species" in status and "Spots" in status.split("polarity per species")[1]
    assert "Spots" in table and "person: ana" in table
    section = html[html.index('id="polarity-table"'):]
    section = section[:section.index("</table>")]
    assert "Spots" in section and "person" in section
    after = _choices(store, job_id)
    assert {c for (it, c) in after.values() if it.species in ("Spots", "SpotsLight")} == {"cluster_1"}
    assert {rel: c for rel, (it, c) in after.items() if it.species not in ("Spots", "SpotsLight")} == {
        rel: c for rel, (it, c) in choices.items() if it.species not in ("Spots", "SpotsLight")}  # the others left
    assert repoint(store, job_id).repointed == 0  # nothing left to do
    # a rerun of the same command keeps the person's call
    again = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store)
    assert again.job.id == job_id and again.job.species_polarity["calls"]["Spots"]["polarity"] == "lighter"  # type: ignore[index]


def test_polarity_option_overrides_at_run_time_and_refuses_unknown_species(qsettings: Settings, both: Path) -> None:
    store = Store(qsettings.database_url)
    with pytest.raises(InvalidParameterError, match="Walrus"):
        run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store,
                    polarity="Walrus=lighter")
    with store.session() as s:
        assert not s.exec(select(Job)).all()  # nothing recorded
    summary = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store,
                          polarity="StripesLight=darker")
    assert summary.job.id is not None
    assert {c for (it, c) in _choices(store, summary.job.id).values() if it.species == "StripesLight"} == {"cluster_0"}


def test_calibrate_then_run_with_settings_from_on_the_command_line(
        qsettings: Settings, both: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gloper_jobs.cli import main

    monkeypatch.setenv("GLOPER_DATABASE_URL", qsettings.database_url)
    monkeypatch.setenv("GLOPER_RESULTS_DIR", str(qsettings.results_dir))
    runner = CliRunner()
    res = runner.invoke(main, ["calibrate", str(both), "--method", "kmeans", "--no-foreground", "--no-progress"])
    assert res.exit_code == 0, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("calibration ")
    cal_id = int(last.split()[1])
    store = Store(qsettings.database_url)
    from gloper_jobs.store import Calibration

    with store.session() as s:
        learnt = {c.species: c.params for c in s.exec(select(Calibration).where(Calibration.job_id == cal_id)).all()}
    assert {sp: p["polarity"] for sp, p in learnt.items()} == {
        sp: "lighter" if sp.endswith("Light") else "darker" for sp in learnt}

    res = runner.invoke(main, ["run", str(both), "--method", "gloper", "--no-foreground", "--no-progress",
                               "--settings-from", str(cal_id), *sum((["--param", f"{k}={v}"] for k, v in TINY.items()), [])])
    assert res.exit_code != 0 and "calibrated --method kmeans" in res.output, res.output
    res = runner.invoke(main, ["run", str(both), "--method", "kmeans", "--no-foreground", "--no-progress",
                               "--settings-from", str(cal_id)])
    assert res.exit_code == 0, res.output
    with store.session() as s:
        job = s.exec(select(Job).where(Job.kind == "extract")).one()
        assert job.species_polarity["calls"]["SpotsLight"]["how"] == "calibration"  # type: ignore[index]
        assert job.species_polarity["calls"]["SpotsLight"]["by"] == f"calibration {cal_id}"  # type: ignore[index]
    for _rel, (item, chosen) in _choices(store, job.id).items():  # type: ignore[arg-type]
        assert chosen == ("cluster_1" if item.species.endswith("Light") else "cluster_0")
    res = runner.invoke(main, ["polarity", str(job.id), "Walrus=lighter"])
    assert res.exit_code != 0 and "Walrus" in res.output, res.output


def test_gloper_calibration_learns_candidate_and_polarity(qsettings: Settings, both: Path) -> None:
    store = Store(qsettings.database_url)
    cal = run_dataset(both, "gloper", qsettings, None, dict(TINY), foreground=False, progress=False, store=store,
                      kind="calibrate", grid=("rho=0.4,0.6",))
    assert cal.job.status == "done" and cal.job.id is not None
    from gloper_jobs.jobs.calibration import calibration_of

    with store.session() as s:
        per_species = calibration_of(s, cal.job.id, "gloper")
        # the stored choice is the best (setting, candidate) of the species
        rows = s.exec(select(Item, Candidate).join(Candidate, col(Candidate.item_id) == col(Item.id))
                      .where(Item.job_id == cal.job.id)).all()
    for species, params in per_species.items():
        name = params["choice"] + ("_lighter" if params["polarity"] == "lighter" else "")
        index = [0.4, 0.6].index(params["rho"])
        scores: dict[tuple[int, str], list[float]] = {}
        for item, cand in rows:
            if item.species == species:
                scores.setdefault((int(item.rel_path.rpartition("=")[2]), cand.name), []).append(cand.dice or 0.0)
        best = max(sum(v) / len(v) for v in scores.values())
        assert sum(scores[(index, name)]) / 2 == pytest.approx(best), species
    ext = run_dataset(both, "gloper", qsettings, None, dict(TINY), foreground=False, progress=False, store=store,
                      settings_from=cal.job.id)
    assert ext.job.id is not None
    for item, chosen in _choices(store, ext.job.id).values():
        p = per_species[item.species]
        assert chosen == p["choice"] + ("_lighter" if p["polarity"] == "lighter" else "")


def test_submit_extract_takes_polarity_and_other_kinds_refuse_it(qsettings: Settings, both: Path) -> None:
    from gloper_jobs.jobs.kinds import KINDS, SubmitRequest

    store = Store(qsettings.database_url)
    sub = KINDS["extract"].record(store, qsettings, SubmitRequest(
        both, "kmeans", foreground=False, extra={"polarity": "Spots=lighter"}))
    with store.session() as s:
        job = s.get(Job, sub.job.id)
        assert job is not None and job.species_polarity == {"overrides": {"Spots": "lighter"},
                                                            "overrides_by": {"Spots": "--polarity"}}
        assert "applied when the job finishes" in format_species_polarity(job)
    with pytest.raises(InvalidParameterError, match="--polarity belongs to `submit extract`"):
        KINDS["calibrate"].record(store, qsettings, SubmitRequest(both, "kmeans", foreground=False,
                                                                  extra={"polarity": "Spots=lighter"}))
    with pytest.raises(InvalidParameterError, match="SPECIES=darker"):
        KINDS["extract"].record(store, qsettings, SubmitRequest(both, "kmeans", foreground=False,
                                                                extra={"polarity": "Spots=pale"}))


def test_manifest_polarity_column_overrides_its_species(qsettings: Settings, both: Path, tmp_path: Path) -> None:
    from gloper_jobs.exceptions import ManifestError

    rows = ["path,polarity", "Spots/spots_00.jpg,lighter", "Spots/spots_01.jpg,", "Stripes/stripes_00.jpg,"]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    store = Store(qsettings.database_url)
    summary = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store,
                          manifest=tmp_path / "m.csv")
    calls = summary.job.species_polarity["calls"]  # type: ignore[index]
    assert calls["Spots"]["how"] == "person" and calls["Spots"]["polarity"] == "lighter"
    assert calls["Spots"]["by"] == "manifest m.csv" and calls["Stripes"]["how"] == "default"
    # --polarity wins over the column
    again = run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store,
                        manifest=tmp_path / "m.csv", polarity="Spots=darker")
    assert again.job.species_polarity["calls"]["Spots"]["polarity"] == "darker"  # type: ignore[index]
    (tmp_path / "bad.csv").write_text("path,polarity\nSpots/spots_00.jpg,lighter\nSpots/spots_01.jpg,darker\n")
    with pytest.raises(ManifestError, match="species Spots has rows with polarity darker and lighter"):
        run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store,
                    manifest=tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("path,polarity\nSpots/spots_00.jpg,pale\n")
    with pytest.raises(ManifestError, match="row 2: polarity 'pale'"):
        run_dataset(both, "kmeans", qsettings, foreground=False, progress=False, store=store,
                    manifest=tmp_path / "bad2.csv")
