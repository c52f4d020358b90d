"""bench.readout_variants: its default read-out is the product's, and every variant is scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.readout_variants import DEFAULT, main, variants
from gloper_jobs.data.datasets import scan_dataset
from gloper_jobs.data.images import load_image
from gloper_jobs.data.labels import load_label
from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.foreground import ForegroundExtractor
from gloper_jobs.foreground.rim import trim_rim
from gloper_jobs.jobs.training import model_params
from gloper_jobs.methods.gloper.dataset_model.train import prepare_photos, train_model
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.scoring.metrics import scores_at
from gloper_jobs.settings import Settings


def test_default_variant_is_what_gloper_run_reads_out(tmp_path: Path, models_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    make_dataset(data, per_species=2, size=96, polarity="both")
    model = tmp_path / "tiny.pt"
    p = model_params(Settings.from_env(device="cpu"),
                     {"size": 32, "local_sizes": "4,8", "batch": 2, "steps": 3, "device": "cpu"})
    train_model(prepare_photos([it.path for it in scan_dataset(data)], 32, None), p, model,
                dataset="synthetic", device=torch.device("cpu"), progress=False)
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    report = main(["--model", str(model), "--dataset", str(data), "--synthetic", "0", "--scales", "64",
                   "--finetune", "2", "--out", str(tmp_path / "r.json")])
    assert set(report["variants"]) == {*variants([4, 8]), "scale=64", "finetune=2", "tta=flip"}
    assert {"choice=local_4", "consensus=8"} <= set(report["variants"])
    assert report["variants"][DEFAULT]["shared"]["label-free"] > 0

    # the bench's default read-out of each photo = the segmenter a job builds with model=tiny.pt,
    # and erode=3 = that less the foreground's rim, as a job's pipeline trims it by default
    settings = Settings.from_env(device="cpu", models_dir=models_dir)
    seg = build_segmenter("gloper", settings, None, {"model": str(model)})
    fg_fn = ForegroundExtractor(models_dir)
    for row, it in zip(report["photos"], (i for i in scan_dataset(data) if i.label_path), strict=True):
        image = load_image(it.path)
        fg = fg_fn(image).mask
        out = seg.segment(image, fg)
        label = load_label(it.label_path)
        dice = {pol: round(scores_at(out.candidates[name], label, 256).dice, 4)
                for pol, name in out.info["polarity"]["candidates"].items()}
        assert row["dice"][DEFAULT] == dice, it.rel_path
        trimmed = trim_rim(out.candidates, fg, settings.foreground_rim)
        assert row["dice"]["erode=3"] == {pol: round(scores_at(trimmed[name], label, 256).dice, 4)
                                          for pol, name in out.info["polarity"]["candidates"].items()}, it.rel_path
    with pytest.raises(SystemExit, match="no such checkpoint"):
        main(["--model", str(tmp_path / "missing.pt")])
