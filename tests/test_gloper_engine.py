"""GloPER's training engine: early stop, all sizes in one pass, options recorded, threads, warm start."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gloper_jobs.data.synthetic import make_photo
from gloper_jobs.devices import configure_torch, default_torch_threads
from gloper_jobs.exceptions import InvalidParameterError
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.methods import create_segmenter
from gloper_jobs.methods.gloper.engine import train_sizes
from gloper_jobs.methods.gloper.params import EngineOptions, GloperParams
from gloper_jobs.scoring.metrics import iou as mask_iou
from gloper_jobs.settings import Settings
from gloper_jobs.store import Store
from gloper_jobs.store import repository as repo

CPU = torch.device("cpu")


def _tensors(kind: str, size: int, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic photo at ``size`` x ``size``: ``1x3xSxS`` in [0, 1] and its ``1xSxS`` body mask."""
    from gloper_jobs.data.images import resize_mask, resize_rgb

    photo, _, body = make_photo(kind, size, np.random.default_rng(seed))
    rgb = torch.from_numpy(resize_rgb(photo, (size, size))).permute(2, 0, 1)[None].contiguous()
    fg = torch.from_numpy(resize_mask(body, (size, size)).astype(np.float32))[None]
    return rgb, fg


def _easy(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Black and white vertical stripes, 4 px wide, over the whole frame."""
    img = torch.ones(1, 3, size, size)
    img[..., (torch.arange(size) // 4) % 2 == 0] = 0.0
    return img, torch.ones(1, size, size)


def test_early_stop_stops_on_an_easy_image_and_records_its_step() -> None:
    img, fg = _easy()
    opts = EngineOptions.plain(steps=40, stop_every=5, stop_iou=0.99)
    stopped = train_sizes(img, fg, (4,), opts, CPU)[4]
    assert 10 <= stopped.stop_step < 40 and stopped.stop_step % 5 == 0
    assert len(stopped.losses) == stopped.stop_step
    # Stopping changes nothing before the stop: its mask is the full run's mask at that step.
    full = train_sizes(img, fg, (4,), EngineOptions.plain(steps=40), CPU, readout_steps=range(1, 40))[4]
    assert full.stop_step == 40 and len(full.losses) == 40
    assert torch.equal(full.snapshots[stopped.stop_step], stopped.weight)
    assert full.losses[: stopped.stop_step] == stopped.losses
    # The stripes are found: the dark columns are the pattern.
    dark = img[0, 0] < 0.5
    assert mask_iou(stopped.weight > 0.5, dark) > 0.95


def test_segmenter_records_stop_steps_and_engine_options_in_info() -> None:
    photo, _, body = make_photo("Stripes", 48, np.random.default_rng(1))
    seg = create_segmenter("gloper", size=32, local_sizes="4,8", steps=12, stop_every=3, stop_iou=0.5,
                           device="cpu", compile="off", batch_sizes="off", channels_last="off")
    out = seg.segment(photo, body)
    assert set(out.info["stop_step"]) == {"local_4", "local_8"}
    # IoU > 0.5 stops early: the largest size (cold) at its second read-out at the soonest,
    # the smaller (warm-started from it, read out at step 0 too) at its first
    assert out.info["stop_step"]["local_8"] in (6, 9, 12) and out.info["stop_step"]["local_4"] in (3, 6, 9, 12)
    engine = out.info["engine"]
    assert engine["chain_sizes"] is True
    assert engine["stop_every"] == 3 and engine["stop_iou"] == 0.5 and engine["steps"] == 12
    assert engine["batched"] is False and engine["channels_last"] is False and engine["precision"] == "fp32"
    ident = seg.params.identity()
    assert ident["stop_every"] == 3 and ident["precision"] == "fp32"
    assert not {"compile", "batch_sizes", "channels_last", "device"} & set(ident)
    with pytest.raises(InvalidParameterError, match="compile"):
        create_segmenter("gloper", compile="fastest")
    with pytest.raises(InvalidParameterError, match="precision"):
        create_segmenter("gloper", precision="fp8")


def test_engine_options_reach_the_stored_item(tmp_path: Path, settings: Settings, synthetic_dir: Path) -> None:
    params = {"size": 32, "local_sizes": "4,8", "steps": 4, "stop_every": 2, "batch_sizes": "on"}
    summary = run_dataset(synthetic_dir, "gloper", settings, params=params, foreground=False, progress=False,
                          limit=1)
    assert summary.processed == 1
    with Store(settings.database_url).session() as s:
        item = next(i for i, _ in repo.item_candidates(s, summary.job.id))
        info = item.info
    assert info is not None and info["engine"]["batched"] is True and info["engine"]["stop_every"] == 2
    assert set(info["stop_step"]) == {"local_4", "local_8"} and all(2 <= v <= 4 for v in info["stop_step"].values())


def test_batched_sizes_match_separate_training() -> None:
    img, fg = _tensors("Stripes", 64)
    sizes = (4, 8, 16)
    separate = train_sizes(img, fg, sizes, EngineOptions.plain(steps=20), CPU)
    batched = train_sizes(img, fg, sizes, replace(EngineOptions.plain(steps=20), batched=True), CPU)
    for ls in sizes:
        assert separate[ls].losses[0] == pytest.approx(batched[ls].losses[0], rel=1e-5)
        assert mask_iou(separate[ls].weight > 0.5, batched[ls].weight > 0.5) > 0.99
    # The engine's separate path is the authors' loop, bit for bit.
    alone = train_sizes(img, fg, (8,), EngineOptions.plain(size=64, local_sizes=(8,), steps=20), CPU)[8]
    w, losses = alone.weight, alone.losses
    assert torch.equal(w, separate[8].weight) and losses == separate[8].losses


def test_batched_early_stop_drops_settled_sizes_and_goes_on() -> None:
    img, fg = _easy(32)
    opts = EngineOptions.plain(steps=40, stop_every=5, stop_iou=0.99)
    separate = train_sizes(img, fg, (4, 8), opts, CPU)
    batched = train_sizes(img, fg, (4, 8), replace(opts, batched=True), CPU)
    for ls in (4, 8):
        assert batched[ls].stop_step == separate[ls].stop_step
        assert len(batched[ls].losses) == batched[ls].stop_step
        assert mask_iou(separate[ls].weight > 0.5, batched[ls].weight > 0.5) > 0.99


def test_bf16_autocast_runs_on_cpu_and_finds_the_stripes() -> None:
    img, fg = _easy()
    out = train_sizes(img, fg, (4,), EngineOptions.plain(steps=25, precision="bf16"), CPU)[4]
    assert out.weight.dtype == torch.float32 and mask_iou(out.weight > 0.5, img[0, 0] < 0.5) > 0.9


def test_warm_start_from_a_previous_photo() -> None:
    img, fg = _tensors("Spots", 32)
    first = train_sizes(img, fg, (4, 8), replace(EngineOptions.plain(steps=15), batched=True), CPU, keep_state=True)
    states = {ls: r.state for ls, r in first.items() if r.state is not None}
    assert set(states) == {4, 8}
    cold = train_sizes(img, fg, (4,), EngineOptions.plain(steps=2), CPU)[4]
    warm = train_sizes(img, fg, (4,), EngineOptions.plain(steps=2), CPU, initial_state=states[4])[4]
    assert warm.losses[0] < cold.losses[0]  # it starts where the trained model ended
    with pytest.raises(InvalidParameterError, match="does not fit GloperNet"):
        train_sizes(img, fg, (4,), EngineOptions.plain(steps=1), CPU, initial_state={"conv.weight": torch.zeros(1)})


def test_size_chain_starts_smaller_sizes_from_the_largest_and_stops_them_sooner() -> None:
    img, fg = _easy(32)
    opts = EngineOptions.plain(steps=40, stop_every=5, stop_iou=0.99)
    cold = train_sizes(img, fg, (4, 8), opts, CPU)
    chain = train_sizes(img, fg, (4, 8), replace(opts, chain_sizes=True), CPU)
    assert list(chain) == [4, 8]  # in the order asked for
    # The largest size is trained exactly as without the chain.
    assert torch.equal(chain[8].weight, cold[8].weight) and chain[8].losses == cold[8].losses
    # The smaller starts from its settled weights: a lower first loss, read out at step 0,
    # so it settles after one read-out interval, where cold it needs two at least.
    assert chain[4].losses[0] < cold[4].losses[0]
    assert chain[4].stop_step == 5 < cold[4].stop_step
    assert chain[4].state is None and chain[8].state is None  # kept only when asked
    assert mask_iou(chain[4].weight > 0.5, img[0, 0] < 0.5) > 0.95
    # Batched (the CUDA default) chains the same way: the largest alone, the rest stacked.
    kept = train_sizes(img, fg, (4, 8), replace(opts, chain_sizes=True, batched=True),
                       CPU, keep_state=True)
    assert kept[8].state is not None and kept[4].stop_step == chain[4].stop_step
    # ... and goes on with its AdamW state: the smaller size's step count continues the largest's.
    assert kept[8].optimizer_state is not None and kept[4].optimizer_state is not None
    donor_steps = int(kept[8].optimizer_state["logits.0.weight"]["step"])
    assert donor_steps == kept[8].stop_step
    assert int(kept[4].optimizer_state["logits.0.weight"]["step"]) == donor_steps + kept[4].stop_step
    separate = train_sizes(img, fg, (4, 8), replace(opts, chain_sizes=True), CPU,
                           keep_state=True)
    assert separate[4].optimizer_state is not None
    assert int(separate[4].optimizer_state["logits.0.weight"]["step"]) == donor_steps + separate[4].stop_step
    seg = create_segmenter("gloper", size=32, local_sizes="4,8", steps=10, stop_every=5, device="cpu")
    assert seg.params.identity()["chain_sizes"] is True  # the default; it changes masks
    off = create_segmenter("gloper", size=32, local_sizes="4,8", steps=10, chain_sizes="off", device="cpu")
    assert off.params.engine_options(CPU).chain_sizes is False
    # Without early stop the chain saves nothing: every size starts from scratch (the authors' loop).
    authors = create_segmenter("gloper", size=32, local_sizes="4,8", steps=10, stop_every=0, device="cpu")
    assert authors.params.engine_options(CPU).chain_sizes is False
    no_stop = train_sizes(img, fg, (4, 8), replace(EngineOptions.plain(steps=6), chain_sizes=True), CPU)
    assert no_stop[4].losses == train_sizes(img, fg, (4,), EngineOptions.plain(steps=6), CPU)[4].losses


def test_torch_threads_default_to_cores_per_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import gloper_jobs.devices as ts
    from workers.launcher import plan_workers

    monkeypatch.setattr(ts, "available_cores", lambda: 16)
    assert default_torch_threads() == 16 and default_torch_threads(3) == 5 and default_torch_threads(32) == 1
    gpus = plan_workers("0,1,2,3", available=["0", "1", "2", "3"])
    assert [s.env["GLOPER_TORCH_THREADS"] for s in gpus] == ["4"] * 4
    assert plan_workers("cpu", available=[], concurrency=4)[0].env["GLOPER_TORCH_THREADS"] == "4"
    assert plan_workers("0", available=["0"], torch_threads=2)[0].env["GLOPER_TORCH_THREADS"] == "2"
    before = torch.get_num_threads()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "unset")
    monkeypatch.setenv("TRITON_CACHE_DIR", "unset")
    monkeypatch.setattr(ts, "available_cores", lambda: 1)
    try:
        configure_torch(None, Settings.from_env(compile_cache_dir=tmp_path / "cc").compile_cache_dir)
        assert torch.get_num_threads() == 1
        import os

        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cc")
    finally:
        torch.set_num_threads(before)


def test_auto_switches_turn_on_with_cuda_only() -> None:
    p = create_segmenter("gloper", profile="paper").params
    assert isinstance(p, GloperParams)
    gpu, cpu = p.engine_options(torch.device("cuda")), p.engine_options(CPU)
    assert gpu.batched and gpu.channels_last and gpu.compile == "off" and gpu.steps == 1000
    assert not cpu.batched and cpu.channels_last
    auto = GloperParams(channels_last="auto").engine_options(CPU)
    assert not auto.channels_last and GloperParams(channels_last="auto").engine_options(torch.device("cuda:1")).channels_last
    one = GloperParams(local_sizes=(8,), choice="local_8").engine_options(torch.device("cuda"))
    assert not one.batched  # nothing to batch


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="torch.compile of GloperNet takes about 4 minutes on this 2-core CPU machine "
                           "(238 s measured for one S=32 model); checked on GPU nodes")
def test_compiled_batched_bf16_matches_eager_on_cuda() -> None:  # pragma: no cover - GPU nodes
    img, fg = (t.cuda() for t in _tensors("Stripes", 64))
    cuda = torch.device("cuda")
    eager = train_sizes(img, fg, (4, 8), EngineOptions.plain(steps=20), cuda)
    for opts in (EngineOptions.plain(steps=20, batched=True, channels_last=True, compile="default"),
                 EngineOptions.plain(steps=20, batched=True, precision="bf16"),
                 EngineOptions.plain(steps=20, precision="tf32", compile="reduce-overhead")):
        fast = train_sizes(img, fg, (4, 8), opts, cuda)
        for ls in (4, 8):
            assert mask_iou(eager[ls].weight > 0.5, fast[ls].weight > 0.5) > 0.95, opts
