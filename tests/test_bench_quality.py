"""bench.quality: the oracle / label-free / oracle-polarity / calibrated figures per method,
species and group that the README's quality table is made from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.quality import calibrated_two_fold, main, species_figures, voted_label_free
from gloper_jobs.jobs.training import model_params
from gloper_jobs.methods.choice import SPECIES_MARGIN, SPECIES_RULES
from gloper_jobs.methods.gloper.dataset_model.train import train_model
from gloper_jobs.settings import Settings
from tests.training_helpers import prepare_photos


def _row(species: str, dice: dict[str, float], scores: float, group: str = "shared") -> dict[str, object]:
    """A photo's block as evaluate_segmenter writes it: two readings, every rule scoring ``scores``."""
    derived = ["consensus", "consensus_lighter"]
    best = max((c for c in dice if c not in derived), key=lambda c: dice[c])
    readings = {"darker": "consensus", "lighter": "consensus_lighter"}
    return {"species": species, "group": group, "dice": dice, "derived": derived, "oracle_dice": dice[best],
            "choice": "consensus", "choice_dice": dice["consensus"], "readings": readings,
            "rule_scores": dict.fromkeys(SPECIES_RULES, scores),
            "oracle_polarity_dice": max(dice[c] for c in readings.values()), "seconds": 0.1}


def test_calibration_is_learnt_on_one_half_and_scored_on_the_other() -> None:
    # photo 0 prefers local_8, photo 1 local_16: each fold learns the other photo's best
    # candidate, so the held-out figure is the mean of the *wrong* picks, not the oracle
    rows = [{"dice": {"local_8": 0.9, "local_16": 0.2}}, {"dice": {"local_8": 0.3, "local_16": 0.8}}]
    assert calibrated_two_fold(rows) == pytest.approx((0.2 + 0.3) / 2)
    same = [{"dice": {"local_8": 0.9, "local_16": 0.2}}, {"dice": {"local_8": 0.7, "local_16": 0.1}}]
    assert calibrated_two_fold(same) == pytest.approx(0.8)
    assert calibrated_two_fold(rows[:1]) is None  # one photo: nothing to hold out


def test_label_free_follows_the_species_vote_not_each_photo() -> None:
    dice = {"local_8": 0.1, "local_8_lighter": 0.7, "consensus": 0.05, "consensus_lighter": 0.8}
    clear = [_row("Seal", dice, -0.9), _row("Seal", dice, -0.5)]
    assert voted_label_free(clear) == [0.8, 0.8]  # every rule below -margin: lighter
    # one photo's clear call is outvoted by its species: the mean stays above -margin
    mixed = [_row("Seal", dice, -0.9), _row("Seal", dice, 0.9)]
    assert voted_label_free(mixed) == [0.05, 0.05]
    weak = [_row("Seal", dice, -SPECIES_MARGIN / 2)]
    assert voted_label_free(weak) == [0.05]  # unclear: the paper's darker reading
    plain = [{**_row("X", dice, 0.0), "readings": {}, "rule_scores": {}, "choice_dice": 0.4}]
    assert voted_label_free(plain) == [0.4]  # one reading (watershed): its choice


def test_species_figures_weigh_species_equally_per_group() -> None:
    a = {"local_8": 0.9, "local_8_lighter": 0.0, "consensus": 0.8, "consensus_lighter": 0.1}
    b = {"local_8": 0.1, "local_8_lighter": 0.6, "consensus": 0.2, "consensus_lighter": 0.5}
    rows = [_row("Zebra", a, 0.5), _row("Zebra", a, 0.5), _row("Zebra", a, 0.5), _row("Seal", b, 0.5),
            _row("Spots", a, 0.5, "synthetic")]
    f = species_figures(rows)
    assert f["by_species"]["shared/Zebra"]["photos"] == 3
    assert f["by_species"]["shared/Seal"]["calibrated"] is None
    assert f["by_group"]["shared"]["label-free"] == pytest.approx((0.8 + 0.2) / 2)  # not (3 * 0.8 + 0.2) / 4
    assert f["by_group"]["shared"]["oracle-polarity"] == pytest.approx((0.8 + 0.5) / 2)
    assert f["by_group"]["shared"]["calibrated"] == pytest.approx(0.9)  # Zebra only
    assert f["by_group"]["shared"]["calibrated_species"] == 1
    assert f["by_group"]["synthetic"]["species"] == 1


def test_bench_runs_methods_and_a_dataset_model_on_real_photos(tmp_path: Path, models_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from gloper_jobs.data.datasets import scan_dataset
    from gloper_jobs.data.synthetic import make_dataset

    data = tmp_path / "data"
    make_dataset(data, per_species=2, size=96, polarity="both")
    model = tmp_path / "tiny.pt"
    photos = prepare_photos([it.path for it in scan_dataset(data)], 32, None)
    p = model_params(Settings.from_env(device="cpu"),
                     {"size": 32, "local_sizes": "4,8", "batch": 2, "steps": 3, "device": "cpu"})
    train_model(photos, p, model, dataset="synthetic", device=torch.device("cpu"), progress=False)
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    out = tmp_path / "q.json"
    report = main(["--dataset", str(data), "--methods", "kmeans,watershed", "--model", f"tiny={model}",
                   "--synthetic", "0", "--out", str(out)])
    assert json.loads(out.read_text())["methods"].keys() == {"kmeans", "watershed", "tiny"}
    assert report["load_before"] and report["machine"]["processor"]
    for name in ("kmeans", "tiny"):
        res = report["methods"][name]
        assert res["by_group"]["shared"]["species"] == 8
        assert res["by_group"]["shared"]["calibrated_species"] == 8
        for key, v in res["by_species"].items():
            rows = [r for r in res["images"] if f"{r['group']}/{r['species']}" == key]
            # what a calibration can reach is bounded by the best candidate per photo
            ceiling = np.mean([max(r["dice"].values()) for r in rows])
            assert v["calibrated"] <= ceiling + 1e-4
            assert v["label-free"] <= v["oracle-polarity"] + 1e-4
            assert v["label-free"] == pytest.approx(np.mean(voted_label_free(rows)), abs=1e-4)
    assert report["methods"]["tiny"]["params"]["model"] == str(model.resolve())
    assert report["methods"]["watershed"]["by_group"]["shared"]["oracle-polarity"] is None
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(["--dataset", str(data), "--model", f"x={tmp_path / 'missing.pt'}"])
