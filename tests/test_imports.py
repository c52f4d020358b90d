"""Importing the library stays light: no Celery, no torchvision, no CUDA, no weights.

The pretrained baselines import transformers and segment_anything only when their
weights load, so those stay out too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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


def _import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project modules it imports: every import statement, at the top, inside
    functions (lazy) or under TYPE_CHECKING alike (a circle is a circle in the design)."""
    mods: dict[str, Path] = {}
    for pkg in packages:
        for f in (root / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            mods[name] = f
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        here = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + "."):  # a package's own __init__ is no edge
                    graph[m].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    graph = _import_graph(REPO, ("gloper_jobs", "workers", "schedulers"))
    assert len(graph) > 50  # it read the project
    assert _cycles(graph) == []
    # the checker finds a circle where there is one
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_the_queue_side() -> None:
    # workers/ and schedulers/ import gloper_jobs; the queue's commands plug into `gloper`
    # through entry points (pyproject.toml), so no edge goes the other way
    graph = _import_graph(REPO, ("gloper_jobs", "workers", "schedulers"))
    back = sorted((m, t) for m, ts in graph.items() if m.startswith("gloper_jobs")
                  for t in ts if t.split(".")[0] in ("workers", "schedulers"))
    assert back == []
    assert any(t.startswith("gloper_jobs") for t in graph["schedulers.cli"])  # it read that side too


def test_the_queue_commands_are_plugged_in_by_entry_points() -> None:
    from click.testing import CliRunner

    from gloper_jobs.cli import main
    from gloper_jobs.cli.common import extensions

    plugged = {c.name for commands in extensions("gloper.commands") for c in commands}
    assert {"submit", "worker", "resume", "retry-failed", "cancel", "flower", "metrics"} <= plugged
    out = CliRunner().invoke(main, ["--help"]).output
    assert all(f"  {name} " in out for name in plugged), out
    assert [fn.__module__ for fn in extensions("gloper.status")] == ["schedulers.cli"]
