"""bench.check: each regression bench against its results JSON, a tolerance per metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import check


def test_metrics_hold_within_their_tolerance_and_fail_outside() -> None:
    assert check.Metric("a", "abs", 0.01).compare(0.665, 0.66) is None
    assert "off by" in (check.Metric("a", "abs", 0.01).compare(0.68, 0.66) or "")
    assert check.Metric("a", "rel", 0.5).compare(14.0, 10.0) is None
    assert check.Metric("a", "rel", 0.5).compare(16.0, 10.0) is not None
    assert check.Metric("a", "at_most", 50).compare(49.9, None) is None
    assert check.Metric("a", "at_most", 50).compare(50.1, 0.0) is not None
    assert check.Metric("a", "equal", 0).compare(1, 0) is not None
    assert check.Metric("a", "equal", True).compare(True, True) is None
    assert "not a number" in (check.Metric("a", "abs", 1).compare(None, 1) or "")
    assert "no figure" in (check.Metric("a", "abs", 1).compare(1, None) or "")
    assert check.lookup({"run": [{"x": 1}, {"x": 2}]}, "run.-1.x") == 2
    assert check.lookup({"a": {}}, "a.b.c") is None


def test_every_check_names_a_results_file_and_figures_it_has() -> None:
    """A check compares figures the stored JSON holds (a renamed key would pass silently otherwise)."""
    for c in check.CHECKS:
        stored = json.loads((check.RESULTS / c.results).read_text())
        for m in c.metrics + (c.quick_metrics or ()):
            if m.kind in ("abs", "rel"):
                assert check.lookup(stored, m.path) is not None, f"{c.name}: {m.path} not in {c.results}"


@pytest.mark.slow
def test_quick_check_runs_the_small_benches_against_their_json(models_dir: Path, examples_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GLOPER_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("GLOPER_EXAMPLES_DIR", str(examples_dir))
    monkeypatch.setenv("GLOPER_TORCH_THREADS", "1")
    code = check.main(["--quick"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("ok")] == [
        c.name for c in check.CHECKS if c.quick is not None]
