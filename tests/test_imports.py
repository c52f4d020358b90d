"""Importing the library stays light: no Celery, no torchvision, no CUDA, no weights.

The pretrained baselines import transformers and segment_anything only when their
weights load, so those stay out too."""

from __future__ import annotations

import subprocess
import sys

CHECK = r"""
import importlib, pkgutil, sys
import gloper_jobs
for mod in pkgutil.walk_packages(gloper_jobs.__path__, "gloper_jobs."):
    if ".migrations" in mod.name:
        continue
    importlib.import_module(mod.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in (
    "celery", "kombu", "torchvision", "transformers", "segment_anything"))
print("BAD", bad)
import torch
print("CUDA_INIT", torch.cuda.is_initialized())
"""


def test_library_imports_no_celery_or_torchvision() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "BAD []" in out.stdout
    assert "CUDA_INIT False" in out.stdout


def test_plain_import_is_cheap() -> None:
    code = "import sys, gloper_jobs; print(sorted(m for m in ('torch','rembg','cv2','sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]"
