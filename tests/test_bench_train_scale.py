"""bench.train_scale: gloper train as shipped (photos prepared when first drawn) against
every photo prepared first, each in its own process, on the same archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.train_scale import main
from gloper_jobs.data.synthetic import make_dataset


def test_both_paths_train_the_same_model(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    make_dataset(src, per_species=1, size=96)
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("GLOPER_DEVICE", "cpu")
    monkeypatch.setenv("GLOPER_TORCH_THREADS", "1")
    out = tmp_path / "scale.json"
    report = main(["--photos", "12", "--megapixels", "0", "--steps", "2", "--examples", str(src),
                   "--archive", str(tmp_path / "archive"), "--json", str(out)])
    assert json.loads(out.read_text())["variants"] == report["variants"]
    lazy, eager = report["variants"]["first-drawn"], report["variants"]["all-first"]
    assert lazy["step"] == eager["step"] == 2 and lazy["photos"] == eager["photos"] == 12
    assert report["same_loss"] and lazy["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)
    assert "gloper_jobs.cli train" in lazy["command"] and lazy["printed"].startswith("model ")
    assert lazy["peak_rss_mb"] > 0 and eager["wall_s"] > 0 and report["wall_ratio"] > 0
