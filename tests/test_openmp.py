"""`gloper run` lets OpenMP threads sleep: spinning ones took the cores rembg needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gloper_jobs.devices import passive_openmp


def test_passive_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_openmp()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_gloper_run_sets_it_before_torch_is_imported() -> None:
    """The CLI must not import torch before `run` sets the policy (libgomp reads it once)."""
    code = ("import sys, gloper_jobs.cli, gloper_jobs.cli.runs; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
