"""The embedded run reads its items in pages: never more than a page of rows at once, every
item exactly once, resumable between pages; its summary keeps counters, not a row per photo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gloper_jobs import defaults
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.settings import Settings
from gloper_jobs.store import ItemStatus, Store
from gloper_jobs.store import repository as repo
from gloper_jobs.store.models import Item


def _archive(root: Path, photos: int, broken: int) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "Zebra"
    folder.mkdir(parents=True)
    for i in range(photos):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    for i in range(broken):
        (folder / f"broken{i}.jpg").write_bytes(b"not a photo")
    return root


def test_run_reads_pages_processes_each_item_once_and_resumes(tmp_path: Path, settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    root = _archive(tmp_path / "archive", photos=9, broken=2)
    pages: list[int] = []
    real_page = repo.pending_page

    def counted(session: Any, job_id: int, after_id: int, limit: int) -> Sequence[Item]:
        rows = real_page(session, job_id, after_id, limit)
        pages.append(len(rows))
        return rows

    def whole_job(*_: Any, **__: Any) -> None:
        raise AssertionError("the run loaded every item of the job at once")

    monkeypatch.setattr(repo, "pending_page", counted)
    monkeypatch.setattr(repo, "items_with_status", whole_job)
    monkeypatch.setattr(repo, "item_candidates", whole_job)  # the report streams its rows too
    monkeypatch.setattr(defaults, "RUN_FAILURES_KEPT", 1)
    params = {"size": 16}

    first = run_dataset(root, "kmeans", settings, params=params, foreground=False, progress=False,
                        page=2, limit=5)
    assert first.processed + first.n_failed == 5 and max(pages) <= 2
    pages.clear()
    rest = run_dataset(root, "kmeans", settings, params=params, foreground=False, progress=False, page=2)
    assert rest.job.id == first.job.id and rest.skipped == 5
    assert first.processed + rest.processed == 9 and first.n_failed + rest.n_failed == 2
    assert max(pages) <= 2 and sum(pages) == 6 and pages[-1] == 0  # 3 pages of the 6 left, then an empty one
    # the summary keeps at most RUN_FAILURES_KEPT failures; the report names both
    assert len(first.failed) <= 1 and len(rest.failed) <= 1
    assert "failed photos (2):" in rest.report
    assert "Zebra/broken0.jpg" in rest.report and "Zebra/broken1.jpg" in rest.report
    with Store(settings.database_url).session() as s:
        job_id = repo.require_id(rest.job)
        assert repo.status_counts(s, job_id) == {ItemStatus.done.value: 9, ItemStatus.failed.value: 2}
        attempts = s.exec(Item.__table__.select().where(Item.__table__.c.job_id == job_id)).all()  # type: ignore[attr-defined]
        assert sorted(row.attempts for row in attempts) == [1] * 11  # each item ran exactly once


def test_report_caps_the_failed_photos_it_lists(tmp_path: Path, settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = _archive(tmp_path / "archive", photos=1, broken=3)
    monkeypatch.setattr(defaults, "REPORT_FAILURES_SHOWN", 2)
    summary = run_dataset(root, "kmeans", settings, params={"size": 16}, foreground=False, progress=False)
    assert summary.n_failed == 3 and summary.processed == 1
    listed = [ln for ln in summary.report.splitlines() if ln.startswith("  Zebra/broken")]
    assert "failed photos (3):" in summary.report and len(listed) == 2
    assert f"1 more: `gloper export {summary.job.id} --format csv`" in summary.report
