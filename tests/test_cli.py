"""The gloper command as a user types it (real subprocesses, real files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gloper_jobs.data.outputs import read_mask


def gloper(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gloper_jobs.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


@pytest.fixture()
def env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    return {"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "GLOPER_RESULTS_DIR": str(tmp_path / "res"),
            "GLOPER_MODELS_DIR": str(models_dir), "GLOPER_DEVICE": "cpu"}


def test_segment_writes_masks_and_overlay(tmp_path: Path, env: dict[str, str], examples_dir: Path) -> None:
    photo = next(examples_dir.glob("Tiger/*.jpg"))
    out = tmp_path / "seg"
    r = gloper("segment", str(photo), "--method", "kmeans", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert "cluster_0" in r.stdout and "<- choice" in r.stdout
    from gloper_jobs.data.images import load_image

    h, w = load_image(photo).shape[:2]
    assert read_mask(out / "cluster_0.png").shape == (h, w)
    overlay = load_image(out / "overlay.png")
    assert overlay.shape == (h, w, 3)


def test_run_then_report_and_jobs(tmp_path: Path, env: dict[str, str], synthetic_dir: Path) -> None:
    r = gloper("run", str(synthetic_dir), "-m", "watershed", "--param", "size=64", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "4 processed" in r.stdout and "ALL" in r.stdout and "masks:" in r.stdout
    again = gloper("run", str(synthetic_dir), "-m", "watershed", "--param", "size=64", "--no-progress", env=env)
    assert "0 processed" in again.stdout and "4 already done" in again.stdout
    rep = gloper("report", env=env)
    assert rep.returncode == 0 and "Stripes" in rep.stdout
    jobs = gloper("jobs", env=env)
    assert "watershed" in jobs.stdout and "done 4" in jobs.stdout


def test_errors_are_one_clear_line(tmp_path: Path, env: dict[str, str], synthetic_dir: Path) -> None:
    r = gloper("run", str(synthetic_dir), "-m", "nope", env=env)
    assert r.returncode == 2 and "unknown method 'nope'" in r.stderr and "kmeans" in r.stderr
    assert "Traceback" not in r.stderr
    r = gloper("run", str(synthetic_dir), "-m", "gloper", "--param", "rho=7", env=env)
    assert r.returncode == 2 and "rho" in r.stderr
    r = gloper("run", str(synthetic_dir), "-m", "kmeans", env={**env, "GLOPER_MODELS_DIR": str(tmp_path / "none")})
    assert r.returncode == 2 and "gloper models install" in r.stderr
    r = gloper("run", str(synthetic_dir), "-m", "kmeans", env={**env, "GLOPER_EVAL_SIZE": "zero"})
    assert r.returncode == 2 and "GLOPER_EVAL_SIZE" in r.stderr
    r = gloper("segment", str(tmp_path / "missing.jpg"), "-m", "kmeans", env=env)
    assert r.returncode == 2 and "missing.jpg: file not found" in r.stderr
    r = gloper("report", env=env)
    assert r.returncode == 2 and "no jobs" in r.stderr


def test_models_install_is_idempotent(tmp_path: Path, models_dir: Path) -> None:
    from gloper_jobs.foreground.weights import locate_model

    src = locate_model(models_dir, "u2netp")
    e = {"GLOPER_MODELS_DIR": str(tmp_path / "m")}
    first = gloper("models", "install", "--from-file", str(src), env=e)
    assert first.returncode == 0 and first.stdout.startswith("installed")
    second = gloper("models", "install", env=e)
    assert second.returncode == 0 and second.stdout.startswith("already installed")


def test_methods_and_synthetic(tmp_path: Path) -> None:
    r = gloper("methods")
    assert r.returncode == 0 and "gloper" in r.stdout and "paper" in r.stdout
    r = gloper("make-synthetic", str(tmp_path / "s"), "--per-species", "1")
    assert r.returncode == 0 and "wrote 4" in r.stdout
    assert len(list((tmp_path / "s").glob("*/label/*.png"))) == 4
    lab = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next((tmp_path / "s").glob("*/label/*.png"))))
    assert set(np.unique(lab)) <= {0, 255}


def test_db_upgrade(tmp_path: Path) -> None:
    r = gloper("db", "upgrade", env={"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'u.db'}"})
    from gloper_jobs.store.db import head_revision

    assert r.returncode == 0 and f"revision {head_revision()}" in r.stdout


def test_run_says_in_one_line_which_unfinished_job_another_rim_would_resume(
        env: dict[str, str], synthetic_dir: Path) -> None:
    first = gloper("run", str(synthetic_dir), "--method", "kmeans", "--limit", "1", "--no-progress",
                   env={**env, "GLOPER_FOREGROUND_RIM": "0"})
    assert first.returncode == 0, first.stderr
    again = gloper("run", str(synthetic_dir), "--method", "kmeans", "--no-progress", env=env)
    assert again.returncode == 0, again.stderr
    lines = [ln for ln in again.stderr.splitlines() if "job 1" in ln]
    assert lines == [
        "warning: job 1 on the same photos and settings is unfinished and trims a foreground rim of 0 (job 2: "
        "0.0117188); to go on with job 1 instead, stop and run the same command with GLOPER_FOREGROUND_RIM=0"]
    assert "UserWarning" not in again.stderr and again.stdout.startswith("job 2: ")
