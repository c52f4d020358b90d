"""`gloper submit` checks the [queue] extra and the broker before it writes anything, and
says what to do in one line (issue 12, defect 6)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.testbed.cluster import GLOPER
from gloper_jobs.testbed.services import free_port
from schedulers.preflight import mask_url

REPO = Path(__file__).resolve().parents[1]


def _submit(tmp_path: Path, extra_path: list[str], broker: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    make_dataset(tmp_path / "photos", per_species=1, size=32)
    db = tmp_path / "store.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLOPER_")}
    env.update(GLOPER_DATABASE_URL=f"sqlite:///{db}", GLOPER_BROKER_URL=broker,
               PYTHONPATH=os.pathsep.join([*extra_path, str(REPO)]))
    proc = subprocess.run([*GLOPER, "submit", "extract", str(tmp_path / "photos"), "--method", "kmeans"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return proc, db


def test_submit_with_the_broker_down_writes_nothing_and_says_so(tmp_path: Path) -> None:
    proc, db = _submit(tmp_path, [], f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer" in lines[0] and "start Redis" in lines[0], proc.stderr
    assert "s3cret" not in proc.stderr
    assert not db.exists()  # no orphan job


def test_submit_without_the_queue_extra_writes_nothing_and_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['celery'] = None  # not installed\n")
    proc, db = _submit(tmp_path, [str(blocker)], "redis://127.0.0.1:6379/0")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'gloper-jobs[queue]'" in lines[0], proc.stderr
    assert not db.exists()


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("postgresql+psycopg://u:pw@db/x?sslmode=require", "postgresql+psycopg://u:***@db/x?sslmode=require"),
    ("rediss://h:6380/0", "rediss://h:6380/0"),
])
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
