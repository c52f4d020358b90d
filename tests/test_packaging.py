"""The wheel ships the library, the workers and the schedulers, and not the testbed (its fake
methods include one that SIGKILLs its worker): tests and benches import it from the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_leaves_out_the_testbed(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    for package in ("gloper_jobs", "workers", "schedulers"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("gloper_jobs-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("gloper_jobs/testbed/")]
    for module in ("gloper_jobs/jobs/__init__.py", "gloper_jobs/jobs/kinds/extract.py", "workers/app.py",
                   "gloper_jobs/store/migrations/versions/0001_initial.py", "gloper_jobs/py.typed"):
        assert module in names, module
    # and the source tree still has it, for tests/ and bench/
    from gloper_jobs.testbed import fake_methods

    assert Path(fake_methods.__file__).is_relative_to(REPO)
