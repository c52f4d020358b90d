"""Helpers of the outputs tests: the gloper command as a subprocess, and a k-means job to export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def gloper(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gloper_jobs.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600, cwd=cwd)


def cli_env(folder: Path, models_dir: Path) -> dict[str, str]:
    return {"GLOPER_DATABASE_URL": f"sqlite:///{folder / 'store.db'}", "GLOPER_RESULTS_DIR": str(folder / "res"),
            "GLOPER_MODELS_DIR": str(models_dir), "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": "1",
            "GLOPER_STAGING_DIR": str(folder / "staged")}


def copy_unlabelled(src: Path, dest: Path, n: int | None = None) -> Path:
    """The photos of ``src`` (first ``n`` species folders) without their label folders."""
    for species in sorted(p for p in src.iterdir() if p.is_dir())[:n]:
        for photo in species.iterdir():
            if photo.is_file():
                (dest / species.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(photo, dest / species.name / photo.name)
    return dest
