"""bench.held_out: [quality]'s done-criteria through the tool's own jobs (label-free with
the species vote, the baseline's oracle, `gloper calibrate` then `--settings-from`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.held_out import CALIBRATED_MIN, LABEL_FREE_MIN, main, markdown, verdicts
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.jobs.training import model_params
from gloper_jobs.methods.gloper.dataset_model.train import train_model
from gloper_jobs.settings import Settings
from tests.training_helpers import prepare_photos


def test_criteria_hold_fail_or_have_no_figure() -> None:
    fig = {"label_free": 0.64, "baseline_oracle": 0.66, "calibrated": None, "worst_vs_darker": -0.02,
           "baseline": "kmeans"}
    got = {c["criterion"]: c["holds"] for c in verdicts(fig)}
    assert got == {f"label-free >= {LABEL_FREE_MIN:.2f}": True, "label-free >= kmeans's oracle (same run)": False,
                   f"calibrated >= {CALIBRATED_MIN:.2f}": None, "worst species, label-free - darker >= -0.05": True}
    assert not verdicts({**fig, "worst_vs_darker": -0.06})[3]["holds"]  # a wrong flip users cannot see


def test_held_out_runs_the_jobs_a_user_runs(tmp_path: Path, models_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In-sample (calibrated on the photos it scores, one rho): the calibration picks, per
    species, the best of every candidate in both polarities, so its figure is at least the
    oracle and the oracle polarity of the same photos. A corrupt photo is named among the
    failures and scores nothing."""
    data = tmp_path / "data"
    make_dataset(data, per_species=1, size=96, polarity="both")
    model = tmp_path / "tiny.pt"
    photos = prepare_photos([it.path for it in scan_dataset(data)], 32, None)
    p = model_params(Settings.from_env(device="cpu"),
                     {"size": 32, "local_sizes": "4,8", "batch": 2, "steps": 3, "device": "cpu"})
    train_model(photos, p, model, dataset="synthetic", device=torch.device("cpu"), progress=False)
    target = tmp_path / "target"
    make_dataset(target, per_species=1, size=96, polarity="both")
    (target / "Spots" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (target / "Spots" / "label" / "broken.png").write_bytes((target / "Spots" / "label" / "spots_00.png").read_bytes())
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("GLOPER_DEVICE", "cpu")

    out = tmp_path / "held.json"
    report = main(["--model", str(model), "--dataset", str(target), "--calibrate-on", str(target),
                   "--grid", "rho=0.5", "--out", str(out)])
    assert json.loads(out.read_text())["figures"] == report["figures"]
    assert report["photos"] == 8 and len(report["species"]) == 8
    assert list(report["failed"]["label-free"]) == ["Spots/broken.jpg"]
    assert report["uncalibrated_species"] == []
    assert set(report["calibration"]) == set(report["species"])
    assert all(c["params"]["rho"] == 0.5 and c["photos"] == 1 for c in report["calibration"].values())
    for sp, row in report["per_species"].items():
        assert row["calibrated"] >= max(row["oracle"], row["oracle_polarity"]) - 1e-9, sp
        assert row["baseline_oracle"] >= row["baseline_label_free"] - 1e-9, sp
        assert row["vs_darker"] == pytest.approx(row["label_free"] - row["darker"], abs=1e-3)
        # nobody settled a species: every one reads the paper's darker colour, the vote only suggests
        assert row["polarity"] == "darker" and row["how"] == "default", row
    assert [c["holds"] is not None for c in report["criteria"]] == [True] * 4
    # --grid is the narrow grid already: the second calibration is the first, nothing runs twice
    assert set(report["stages_seconds"]) == {"label-free", "kmeans", "calibrate", "calibrated"}
    assert report["figures"]["calibrated_narrow"] == report["figures"]["calibrated"]

    # the grid (three rhos) and, beside it, mask and polarity only at rho 0.5
    wide = main(["--model", str(model), "--dataset", str(target), "--calibrate-on", str(target),
                 "--out", str(tmp_path / "wide.json")])
    assert wide["narrow_grid"] == ["rho=0.5"] and wide["grid"] == []
    assert set(wide["stages_seconds"]) == {"label-free", "kmeans", "calibrate", "calibrated",
                                           "calibrate narrow", "calibrated narrow"}
    for sp, row in wide["per_species"].items():
        # in-sample: the wider grid holds the narrow one's settings, and both every polarity
        assert row["calibrated"] >= row["calibrated_narrow"] - 1e-9, sp
        assert row["calibrated_narrow"] >= row["oracle_polarity"] - 1e-9, sp
    assert "calibrated (rho=0.5)" in markdown(wide)


def test_held_out_refuses_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--dataset"):
        main(["--model", __file__, "--dataset", str(tmp_path / "nowhere")])


def test_held_out_trains_the_model_on_the_photos_it_scores(tmp_path: Path, models_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --model the bench trains the issue's model (gloper train's defaults, here made
    tiny with --train-param) on --dataset, without labels, keeps it beside the report and
    scores with it; a second run with the same --out reuses the finished model."""
    target = tmp_path / "target"
    make_dataset(target, per_species=1, size=96, polarity="both")
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("GLOPER_DEVICE", "cpu")
    out = tmp_path / "held.json"
    tiny = ["--train-param", "size=32", "--train-param", "local_sizes=4,8", "--train-param", "batch=2",
            "--train-param", "steps=3"]
    args = ["--dataset", str(target), "--calibrate-on", str(target), "--grid", "rho=0.5", "--out", str(out)]
    report = main([*args, *tiny])
    model = tmp_path / "held.model.pt"
    assert report["model"] == str(model.resolve()) and model.is_file()
    training = report["training"]
    assert training["trained_on"] == str(target.resolve()) and training["photos"] == 8 and training["steps"] == 3
    assert training["params"] == {"size": "32", "local_sizes": "4,8", "batch": "2", "steps": "3"}
    saved = torch.load(model, weights_only=True)
    assert saved["step"] == 3 and saved["settings"]["size"] == 32
    assert report["photos"] == 8 and all(c["holds"] is not None for c in report["criteria"])
    assert json.loads(out.read_text())["training"] == training

    again = main([*args, *tiny])  # finished: nothing more is trained, the same figures come out
    assert again["training"]["steps"] == 3 and torch.load(model, weights_only=True)["step"] == 3
    assert again["figures"] == report["figures"]

    with pytest.raises(SystemExit, match="with --model there is none to train"):
        main(["--model", str(model), *args, *tiny])
    with pytest.raises(SystemExit, match="not K=V"):
        main([*args, "--train-param", "steps"])
    with pytest.raises(SystemExit, match="training on"):
        main([*args, "--out", str(tmp_path / "bad.json"), "--train-param", "steps=-1"])
