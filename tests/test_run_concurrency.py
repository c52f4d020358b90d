"""The embedded run with several photos in flight: they overlap, each is recorded once, the
results equal a one-at-a-time run's, and shared state (segmenters, torch's seed) stays safe."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from gloper_jobs.exceptions import TransientError
from gloper_jobs.jobs.runner import run_dataset, run_photos
from gloper_jobs.methods.base import Segmenter
from gloper_jobs.methods.cache import SegmenterCache
from gloper_jobs.settings import Settings
from gloper_jobs.store import ItemStatus, Store
from gloper_jobs.store import repository as repo
from gloper_jobs.testbed import fake_methods  # noqa: F401 - registers slow_logger


def _intervals(log: Path) -> dict[str, tuple[float, float]]:
    start: dict[str, float] = {}
    out: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        what, name, _pid, at = line.split()
        if what == "start":
            start[name] = float(at)
        else:
            out[name] = (start[name], float(at))
    return out


def _overlapping(spans: dict[str, tuple[float, float]]) -> int:
    items = sorted(spans.values())
    return sum(1 for (_, end), (nxt, _) in zip(items, items[1:], strict=False) if nxt < end)


@pytest.mark.parametrize("photos", [1, 2])
def test_photos_in_flight_overlap_and_each_is_recorded_once(tmp_path: Path, settings: Settings,
                                                            synthetic_dir: Path, photos: int) -> None:
    log = tmp_path / "runs.log"
    settings = settings.model_copy(update={"run_photos": photos})
    summary = run_dataset(synthetic_dir, "slow_logger", settings, params={"seconds": 0.4, "log": str(log)},
                          progress=False, foreground=False)
    assert summary.processed == 4 and not summary.failed
    spans = _intervals(log)
    assert len(spans) == 4  # every photo ran exactly once
    if photos == 1:
        assert _overlapping(spans) == 0
    else:
        assert _overlapping(spans) >= 1  # two photos were in flight together
    with Store(settings.database_url).session() as s:
        job = repo.get_job(s, summary.job.id)
        assert job.status == "done"
        pairs = repo.item_candidates(s, summary.job.id)
        assert len(pairs) == 4 and {i.status for i, _ in pairs} == {ItemStatus.done.value}
        assert len({i.id for i, _ in pairs}) == 4


def test_two_photos_at_once_give_the_masks_of_one_at_a_time(tmp_path: Path, settings: Settings,
                                                             synthetic_dir: Path) -> None:
    """Per-photo GloPER trains a seeded network per photo: two threads drawing initial weights
    from torch's one generator at once would each get another photo's draw."""
    params = {"size": 32, "local_sizes": "4,8", "steps": 12}
    masks = []
    for photos in (1, 2):
        run = settings.model_copy(update={"run_photos": photos, "torch_threads": 1,
                                          "database_url": f"sqlite:///{tmp_path / f'p{photos}.db'}",
                                          "results_dir": tmp_path / f"r{photos}"})
        summary = run_dataset(synthetic_dir, "gloper", run, params=params, progress=False, foreground=False)
        assert summary.processed == 4
        with Store(run.database_url).session() as s:
            masks.append({(i.rel_path, c.name): c.rle for i, c in repo.item_candidates(s, summary.job.id)})
    assert masks[0].keys() == masks[1].keys() and len(masks[0]) == 4 * 8
    assert masks[0] == masks[1]


def test_a_transient_error_puts_its_photo_back_and_stops_the_run(tmp_path: Path, settings: Settings,
                                                                 synthetic_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from gloper_jobs.testbed.fake_methods import SlowLogger

    real = SlowLogger.segment

    def flaky(self: SlowLogger, image, foreground, context=None):  # type: ignore[no-untyped-def]
        if context is not None and context.name and context.name.startswith("spots"):
            raise TransientError("the GPU went away")
        return real(self, image, foreground, context)

    monkeypatch.setattr(SlowLogger, "segment", flaky)
    settings = settings.model_copy(update={"run_photos": 2})
    with pytest.raises(TransientError):
        run_dataset(synthetic_dir, "slow_logger", settings, params={"seconds": 0.05}, progress=False,
                    foreground=False)
    with Store(settings.database_url).session() as s:
        job = repo.get_job(s)
        statuses = {i.rel_path: i.status for i in repo.items_with_status(
            s, repo.require_id(job), [st.value for st in ItemStatus])}
    assert ItemStatus.running.value not in statuses.values()
    assert statuses["Spots/spots_00.jpg"] == ItemStatus.pending.value
    monkeypatch.setattr(SlowLogger, "segment", real)
    again = run_dataset(synthetic_dir, "slow_logger", settings, params={"seconds": 0.05}, progress=False,
                        foreground=False)
    assert again.processed + again.skipped == 4 and again.job.status == "done"


def test_run_photos_defaults_to_the_cores(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import gloper_jobs.devices as devices

    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    assert run_photos(settings) == 2
    monkeypatch.setattr(devices, "available_cores", lambda: 64)
    assert run_photos(settings) == 4
    assert run_photos(settings.model_copy(update={"run_photos": 3})) == 3
    from gloper_jobs.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="GLOPER_RUN_PHOTOS.*positive"):
        Settings.from_env(run_photos=0)


class _Closing(Segmenter):
    name = "closing"

    def __init__(self) -> None:  # no params needed
        self.closed = False

    def segment(self, image, foreground, context=None):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


def test_an_evicted_segmenter_is_closed_only_when_its_lease_ends() -> None:
    built: list[_Closing] = []

    def build(method: str, profile: str | None, params: dict) -> _Closing:  # type: ignore[type-arg]
        built.append(_Closing())
        return built[-1]

    cache = SegmenterCache(build, capacity=1)
    with cache.lease("a") as a:
        with cache.lease("b") as b:  # evicts a, which the outer block still holds
            assert not a.closed and not b.closed
        assert not a.closed and not b.closed  # b is still cached
    assert a.closed and not b.closed  # a's last lease ended
    cache.clear()
    assert b.closed and len(built) == 2


def test_seeded_networks_drawn_in_threads_match_sequential_draws() -> None:
    from gloper_jobs.methods.gloper.models import new_net

    def weights(seed: int) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in new_net(8, seed, None).parameters()])

    expected = {seed: weights(seed) for seed in range(6)}
    got: dict[int, list[torch.Tensor]] = {seed: [] for seed in expected}

    def draw(seed: int) -> None:
        for _ in range(5):
            got[seed].append(weights(seed))

    threads = [threading.Thread(target=draw, args=(seed,)) for seed in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, draws in got.items():
        assert all(torch.equal(d, expected[seed]) for d in draws), f"seed {seed} got another thread's weights"
