"""The dataset-level GloPER model: training, checkpoints, resume, extraction with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlmodel import select

from gloper_jobs.exceptions import (
    GloperError,
    InvalidParameterError,
    ModelCheckpointError,
    ModelSettingsError,
)
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.jobs.training import model_params, train_dataset
from gloper_jobs.methods.gloper.dataset_model.checkpoint import (
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from gloper_jobs.methods.gloper.dataset_model.extract import ModelExtractor, pattern_weights
from gloper_jobs.methods.gloper.dataset_model.train import train_model
from gloper_jobs.methods.gloper.net import GloperNet
from gloper_jobs.methods.gloper.params import DatasetModelParams
from gloper_jobs.methods.registry import build_segmenter
from gloper_jobs.settings import Settings
from gloper_jobs.store import Candidate, Item, Model, ModelStatus, Store
from tests.training_helpers import prepare_photos

TINY = {"size": 32, "local_sizes": "4,8", "batch": 2, "checkpoint_every": 2, "device": "cpu"}


def _params(settings: Settings, **extra: object) -> DatasetModelParams:
    return model_params(settings, {**TINY, **extra})


@pytest.fixture(scope="module")
def photos(synthetic_dir: Path):  # type: ignore[no-untyped-def]
    from gloper_jobs.data.datasets import scan_dataset

    return prepare_photos([it.path for it in scan_dataset(synthetic_dir)], 32, None)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, photos) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    p = model_params(Settings.from_env(device="cpu"), {**TINY, "steps": 4})
    train_model(photos, p, out, dataset="synthetic", device=torch.device("cpu"), progress=False)
    return out


def test_network_has_one_head_set_per_local_size() -> None:
    net = GloperNet((4, 8))
    out = net(torch.rand(2, 3, 32, 32))
    assert sorted(out) == [4, 8]
    logits, a, b = out[8]
    assert logits.shape == (2, 2, 32, 32) and a.shape == (2, 2, 3, 4, 4) and b.shape == (2, 2, 3, 2, 2)
    weights = pattern_weights(net, torch.rand(1, 3, 32, 32))
    assert weights[4].shape == (32, 32) and 0 <= float(weights[4].min()) <= float(weights[4].max()) <= 1


def test_params_validate_and_pick_a_crop(settings: Settings) -> None:
    assert _params(settings).crop_size == 16
    default = model_params(settings, {})
    assert (default.size, default.local_sizes, default.batch) == (256, (16, 32), 4)
    assert default.crop_size == 192  # S=256, sizes 16/32: a multiple of 64 within 3/4
    assert model_params(settings, {"size": 128, "local_sizes": "8,16"}).crop_size == 96
    with pytest.raises(GloperError, match="crop=24 must be a multiple of 16"):
        _params(settings, crop=24)
    with pytest.raises(GloperError, match="2\\*12 must divide size=32"):
        _params(settings, local_sizes="12")


def test_save_load_round_trip(tiny_model: Path, photos) -> None:  # type: ignore[no-untyped-def]
    ck = load_checkpoint(tiny_model)
    assert ck.step == 4 and len(ck.losses) == 4 and ck.photos == len(photos) == 4
    assert ck.settings["size"] == 32 and ck.settings["local_sizes"] == [4, 8] and ck.dataset == "synthetic"
    assert all(np.isfinite(ck.losses)) and ck.optimizer is not None and ck.optimizer["state"]
    net = ck.network()
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, ck.state_dict[name]), name
    assert not list(tiny_model.parent.glob(".*.tmp"))  # the atomic write left no temp file
    image = photos.images[:1].float() / 255
    assert torch.equal(pattern_weights(net, image)[8], pattern_weights(ck.network(), image)[8])


def test_a_model_for_other_settings_is_refused(tiny_model: Path, settings: Settings, photos) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelSettingsError) as exc:
        ModelExtractor(tiny_model, 64, (4, 8), torch.device("cpu"))
    msg = str(exc.value)
    assert str(tiny_model) in msg and "--param size=32 --param local_sizes=4,8" in msg
    with pytest.raises(ModelSettingsError, match="local_sizes=4,8; this run asks for size=32, local_sizes=8"):
        build_segmenter("gloper", settings, None, {"model": str(tiny_model), "size": 32, "local_sizes": "8"})
    # continuing training with other settings, or on another dataset, is refused too
    with pytest.raises(ModelSettingsError, match="lr=0.001 \\(asked 0.01\\)"):
        train_model(photos, _params(settings, steps=6, lr=0.01), tiny_model, dataset="synthetic",
                    device=torch.device("cpu"), progress=False)
    with pytest.raises(ModelSettingsError, match="trained on synthetic, not elsewhere"):
        train_model(photos, _params(settings, steps=6), tiny_model, dataset="elsewhere",
                    device=torch.device("cpu"), progress=False)


def test_corrupt_or_truncated_checkpoints_name_the_file(tiny_model: Path, tmp_path: Path) -> None:
    data = tiny_model.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for bad in (truncated, garbage, empty):
        with pytest.raises(ModelCheckpointError, match="corrupt or truncated") as exc:
            load_checkpoint(bad)
        assert str(bad) in str(exc.value) and isinstance(exc.value, GloperError)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelCheckpointError, match=f"{other} is not a GloPER dataset model"):
        load_checkpoint(other)
    newer = tmp_path / "newer.pt"
    save_checkpoint(newer, {"version": 99})
    with pytest.raises(ModelCheckpointError, match="format version 99"):
        load_checkpoint(newer)
    with pytest.raises(ModelCheckpointError, match=f"{tmp_path / 'missing.pt'} does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_continues_the_step_count_and_the_loss_curve(tmp_path: Path, settings: Settings, photos) -> None:  # type: ignore[no-untyped-def]
    p = _params(settings, steps=6)
    whole = train_model(photos, p, tmp_path / "whole.pt", dataset="d", device=torch.device("cpu"), progress=False)

    class Killed(Exception):
        pass

    def kill_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Killed

    out = tmp_path / "killed.pt"
    with pytest.raises(Killed):
        train_model(photos, p, out, dataset="d", device=torch.device("cpu"), progress=False, on_step=kill_at_3)
    ck = load_checkpoint(out)
    assert ck.step == 2 and len(ck.losses) == 2  # the last checkpoint before the kill
    again = train_model(photos, p, out, dataset="d", device=torch.device("cpu"), progress=False)
    assert again.start_step == 2 and again.step == 6 and len(again.losses) == 6
    # the same photos and draws per step: the resumed curve is the uninterrupted one
    assert again.losses == pytest.approx(whole.losses, rel=1e-4)
    assert load_checkpoint(out).losses == again.losses
    more = train_model(photos, _params(settings, steps=8), out, dataset="d", device=torch.device("cpu"),
                       progress=False)
    assert more.start_step == 6 and more.step == 8


def test_gloper_run_with_a_model_records_masks(tiny_model: Path, settings: Settings, synthetic_dir: Path) -> None:
    store = Store(settings.database_url)
    params = {"model": str(tiny_model), "size": 32, "local_sizes": "4,8"}
    summary = run_dataset(synthetic_dir, "gloper", settings, None, params, foreground=False, progress=False,
                          store=store)
    assert summary.processed == 4 and not summary.failed
    with store.session() as s:
        items = s.exec(select(Item)).all()
        cands = s.exec(select(Candidate)).all()
    # the same candidates and read-out as per-photo GloPER: both polarities, fused and consensus
    assert {c.name for c in cands} == {f"{base}{pol}" for pol in ("", "_lighter")
                                       for base in ("local_4", "local_8", "fused", "consensus")}
    assert all(i.info and i.info["polarity"]["polarity"] in ("darker", "lighter") for i in items)
    assert all(Path(c.mask_path).is_file() for c in cands if c.is_choice) and all(c.dice is not None for c in cands)
    assert all(c.rle is not None and bool(c.mask_path) == c.is_choice for c in cands)
    assert all(i.info and i.info["model"] == str(tiny_model.resolve()) and i.info["model_step"] == 4 for i in items)
    # a warm start trains a copy per photo; the loaded model itself is untouched
    seg = build_segmenter("gloper", settings, None, {**params, "finetune_steps": 2})
    before = {k: v.clone() for k, v in seg._model.net.state_dict().items()}  # type: ignore[union-attr]
    image = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    out = seg.segment(image, np.ones((40, 48), dtype=bool))
    # read out at 256 (bilinear weights), not the model's S=32
    assert out.info["finetune_steps"] == 2 and out.candidates["fused"].shape == (256, 256)
    assert all(torch.equal(v, before[k]) for k, v in seg._model.net.state_dict().items())  # type: ignore[union-attr]


def test_a_model_alone_sets_the_size_and_local_sizes_it_was_trained_for(tiny_model: Path, settings: Settings,
                                                                       synthetic_dir: Path) -> None:
    """``--param model=M.pt`` without size or local sizes runs at the checkpoint's (32; 4 and 8,
    not GloPER's defaults of 128; 8 and 16), and they are part of the job's identity."""
    summary = run_dataset(synthetic_dir, "gloper", settings, None, {"model": str(tiny_model)}, foreground=False,
                          progress=False)
    assert summary.processed == 4 and not summary.failed
    assert summary.job.params["size"] == 32 and list(summary.job.params["local_sizes"]) == [4, 8]
    seg = build_segmenter("gloper", settings, "paper", {"model": str(tiny_model)})  # the model wins over a profile
    assert seg.params.size == 32 and seg.params.local_sizes == (4, 8)  # type: ignore[attr-defined]


def test_submitting_with_a_model_builds_no_network_and_keeps_the_job_key(
        tiny_model: Path, settings: Settings, synthetic_dir: Path, tmp_path: Path, broker_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`gloper submit extract --param model=M.pt` makes the job's identity from the checkpoint's
    metadata: no network is built and no weights are read (both raise here), and the key is the
    one a built segmenter gave (the model's file and its S and local sizes). By the model's
    name it is the same job, looked up in the command's own store (no second one is opened).
    `gloper run` builds the network once, where its items run, and records the same key."""
    from click.testing import CliRunner

    from gloper_jobs.cli import main
    from gloper_jobs.methods.gloper.dataset_model import extract
    from gloper_jobs.methods.gloper.params import GloperParams
    from gloper_jobs.store import Job, db
    from gloper_jobs.store.model_registry import record_checkpoint, register_model
    from gloper_jobs.store.repository import JobSpec

    model = str(tiny_model.resolve())
    identity = GloperParams(model=model, size=32, local_sizes=(4, 8)).identity()
    key = JobSpec("extract", str(synthetic_dir.resolve()), "gloper", identity, None, "none", settings.eval_size,
                  settings.results_root).key

    def refuse(what: str):  # type: ignore[no-untyped-def]
        def fail(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"{what} to record a job")
        return fail

    stores: list[str] = []
    open_store = db.Store.__init__

    def counted(self: db.Store, url: str, *args: object, **kwargs: object) -> None:
        stores.append(url)
        open_store(self, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GloperNet, "__init__", refuse("a network was built"))
    monkeypatch.setattr(extract, "load_checkpoint", refuse("the weights were read"))
    monkeypatch.setattr(db.Store, "__init__", counted)
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    for name, value in {"GLOPER_DATABASE_URL": url, "GLOPER_BROKER_URL": broker_url, "GLOPER_DEVICE": "cpu",
                        "GLOPER_RESULTS_DIR": str(tmp_path / "results")}.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    submit = ["submit", "extract", str(synthetic_dir), "--method", "gloper", "--no-foreground", "--device-class", "cpu"]
    first = runner.invoke(main, [*submit, "--param", f"model={tiny_model}"])
    assert first.exit_code == 0, first.output
    assert "(new job): 4 items, 4 new, 4 enqueued" in first.output
    job_id = int(first.output.strip().splitlines()[-1])

    with Store(url).session() as s:
        ck = load_checkpoint(tiny_model)
        register_model(s, "tiny", "synthetic", ck.settings, model, steps=ck.step)
        record_checkpoint(s, "tiny", ck.step, ck.losses, file_sha256(tiny_model), ck.seconds, ck.photos)
        assert s.get(Job, job_id).key == key  # type: ignore[union-attr]
    stores.clear()
    named = runner.invoke(main, [*submit, "--param", "model=tiny"])
    assert named.exit_code == 0, named.output
    assert "(existing job)" in named.output and int(named.output.strip().splitlines()[-1]) == job_id
    assert stores == [url]  # the command's store, whose session found the name

    monkeypatch.undo()  # networks may be built again, and are counted
    built: list[object] = []
    network = GloperNet.__init__

    def counting(self: GloperNet, *args: object, **kwargs: object) -> None:
        built.append(args)
        network(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(GloperNet, "__init__", counting)
    monkeypatch.setenv("GLOPER_DATABASE_URL", f"sqlite:///{tmp_path / 'run.db'}")
    monkeypatch.setenv("GLOPER_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("GLOPER_DEVICE", "cpu")
    run = runner.invoke(main, ["run", str(synthetic_dir), "--method", "gloper", "--no-foreground", "--no-progress",
                               "--param", f"model={tiny_model}"])
    assert run.exit_code == 0 and "4 processed, 0 failed" in run.output, run.output
    assert len(built) == 1  # one network for the four photos, built in the run's worker context
    with Store(f"sqlite:///{tmp_path / 'run.db'}").session() as s:
        (job,) = s.exec(select(Job)).all()
        assert job.key == key and job.params == identity
        assert {i.status for i in s.exec(select(Item)).all()} == {"done"}


def test_a_model_is_read_out_at_256_and_per_photo_gloper_at_s(tiny_model: Path, settings: Settings) -> None:
    """``readout_size`` 0 (auto): a dataset model's masks at max(S, 256), per-photo GloPER's at S,
    whose job keys therefore stay those recorded before the parameter existed."""
    from gloper_jobs.methods.gloper.params import GloperParams

    image = (np.random.default_rng(1).random((60, 80, 3)) * 255).astype(np.uint8)
    fg = np.ones((60, 80), dtype=bool)
    model = build_segmenter("gloper", settings, None, {"model": str(tiny_model)})
    assert model.segment(image, fg).candidates["consensus"].shape == (256, 256)
    assert model.identity()["readout_size"] == 256
    at_s = build_segmenter("gloper", settings, None, {"model": str(tiny_model), "readout_size": 32})
    masks = at_s.segment(image, fg).candidates
    assert masks["consensus"].shape == (32, 32) and "readout_size" not in at_s.identity()
    per_photo = GloperParams()
    assert per_photo.readout_side == 128 and "readout_size" not in per_photo.identity()
    assert GloperParams(readout_size=512).identity()["readout_size"] == 512
    with pytest.raises(InvalidParameterError, match="readout_size=16 must be 0 \\(auto\\) or between size=32"):
        build_segmenter("gloper", settings, None, {"model": str(tiny_model), "readout_size": 16})


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gloper_jobs.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def test_cli_train_records_the_model_and_run_finds_it_by_name(tmp_path: Path, synthetic_dir: Path,
                                                               models_dir: Path) -> None:
    env = {"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "GLOPER_RESULTS_DIR": str(tmp_path / "res"),
           "GLOPER_MODELS_DIR": str(models_dir), "GLOPER_DEVICE": "cpu"}
    out = tmp_path / "m.pt"
    tiny = [f"--param={k}={v}" for k, v in TINY.items() if k != "device"]
    r = _cli("train", str(synthetic_dir), "--out", str(out), "--model", "syn", *tiny, "--param=steps=3",
             "--no-foreground", env=env)
    assert r.returncode == 0, r.stderr
    assert "step 3 (3 this run, from 0), 4 photos" in r.stdout and "photos/s" in r.stdout
    assert "training m.pt" in r.stderr and "loss=" in r.stderr  # the progress bar
    store = Store(env["GLOPER_DATABASE_URL"])
    with store.session() as s:
        model = s.exec(select(Model)).one()
    assert model.name == "syn" and model.step == 3 and model.status == ModelStatus.done.value
    assert model.sha256 == file_sha256(out) and len(model.losses) == 3 and model.photos == 4
    r = _cli("train", str(synthetic_dir), "--out", str(out), "--model", "syn", *tiny, "--param=steps=3",
             "--no-foreground", env=env)  # the same command again: finished, nothing is trained
    assert r.returncode == 0 and f"model {out}: already at step 3, nothing to train (4 photos" in r.stdout, r.stderr
    assert "training m.pt" not in r.stderr and file_sha256(out) == model.sha256
    r = _cli("run", str(synthetic_dir), "-m", "gloper", "--param", "model=syn", "--param", "size=32",
             "--param", "local_sizes=4,8", "--no-foreground", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr
    assert "4 processed" in r.stdout and f"model={out}" in r.stdout
    r = _cli("run", str(synthetic_dir), "-m", "gloper", "--param", "model=nope", env=env)
    assert r.returncode == 2 and "no model named 'nope' in the store (models: syn)" in r.stderr
    # the model alone: its size and local sizes, so the same job as above (nothing left to do)
    r = _cli("run", str(synthetic_dir), "-m", "gloper", "--param", "model=syn", "--no-foreground", "--no-progress",
             env=env)
    assert r.returncode == 0 and "0 processed, 0 failed, 4 already done" in r.stdout, r.stdout + r.stderr
    r = _cli("run", str(synthetic_dir), "-m", "gloper", "--param", "model=syn", "--param", "size=64", env=env)
    assert r.returncode == 2 and "--param size=32 --param local_sizes=4,8" in r.stderr
    out.write_bytes(out.read_bytes()[:1000])
    r = _cli("run", str(synthetic_dir), "-m", "gloper", "--param", f"model={out}", "--param", "size=32", env=env)
    assert r.returncode == 2 and f"model checkpoint {out} is corrupt or truncated" in r.stderr
    assert "Traceback" not in r.stderr


def test_torchrun_trains_with_ddp_on_two_cpu_processes(tmp_path: Path, synthetic_dir: Path, models_dir: Path) -> None:
    """The documented multi-GPU path, on two Gloo (CPU) processes: one checkpoint, written by rank 0."""
    env = {"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'ddp.db'}", "GLOPER_MODELS_DIR": str(models_dir),
           "GLOPER_DEVICE": "cpu", "GLOPER_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "ddp.pt"
    tiny = [f"--param={k}={v}" for k, v in TINY.items() if k != "device"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gloper_jobs.cli", "train", str(synthetic_dir), "--out", str(out), *tiny,
                        "--param=steps=2", "--no-foreground", "--no-progress"],
                       capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = load_checkpoint(out)
    assert ck.step == 2 and len(ck.losses) == 2 and ck.photos == 4
    assert r.stdout.count("model ") == 2  # both ranks finish; only rank 0 wrote the file


def test_the_read_out_needs_only_head_a() -> None:
    net = GloperNet((4, 8)).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        full, fast = net(x), net.centroids_a(x)
    assert all(torch.equal(full[ls][1], fast[ls]) for ls in (4, 8))


def test_submit_train_with_a_model_records_one_item_on_the_train_queue(settings: Settings,
                                                                        synthetic_dir: Path) -> None:
    from gloper_jobs.jobs.kinds import SubmitRequest, get_kind
    from gloper_jobs.store.model_registry import ModelConflictError

    store = Store(settings.database_url)
    request = SubmitRequest(synthetic_dir, "gloper", params={"size": "32", "local_sizes": "4,8"}, model="m",
                            on_device="cpu")
    sub = get_kind("train").record(store, settings, request)  # `submit train --model m`
    assert sub.created and sub.added == 1 and sub.job.kind == "train" and sub.job.queue == "train.cpu"
    again = get_kind("train").record(store, settings, request)
    assert again.job.id == sub.job.id and again.added == 0
    with store.session() as s:
        model = s.exec(select(Model)).one()
    assert model.status == ModelStatus.training.value and model.step == 0 and model.job_id == sub.job.id
    assert model.checkpoint_path == str(settings.results_dir.resolve() / "models" / "m.pt")
    with pytest.raises(ModelConflictError, match="model 'm' already exists with settings local_sizes=\\[4, 8\\] \\(asked \\[16, 32\\]\\), size=32 \\(asked 256\\)"):
        get_kind("train").record(store, settings, SubmitRequest(synthetic_dir, "gloper", model="m"))
    with pytest.raises(GloperError, match="--grid belongs to `submit calibrate`"):
        get_kind("train").record(store, settings, SubmitRequest(synthetic_dir, "gloper", model="m2",
                                                                grid=("rho=0.3,0.5",)))
    with pytest.raises(GloperError, match="needs a name: --model NAME"):
        get_kind("train").record(store, settings, SubmitRequest(synthetic_dir, "gloper"))


def test_a_model_training_item_runs_through_the_recording_path_and_resumes(settings: Settings,
                                                                             synthetic_dir: Path) -> None:
    """The kind's run_item as a worker runs it (no broker): a second delivery after a kill
    continues from the checkpoint the first one left (the real queue: tests/test_queue_model.py)."""
    from gloper_jobs.jobs.context import WorkerContext
    from gloper_jobs.jobs.kinds import SubmitRequest, get_kind
    from gloper_jobs.jobs.recording import run_and_record

    store = Store(settings.database_url)
    params = {**{k: str(v) for k, v in TINY.items() if k != "device"}, "steps": "4"}
    sub = get_kind("train").record(store, settings, SubmitRequest(synthetic_dir, "gloper", params=params,
                                                                  foreground=False, model="m"))
    with store.session() as s:
        item = s.exec(select(Item).where(Item.job_id == sub.job.id)).one()
        model = s.exec(select(Model)).one()
    # a first delivery killed after step 2's checkpoint: leave that checkpoint behind
    photos = prepare_photos([p for p in sorted(synthetic_dir.rglob("*.jpg"))], 32, None)
    train_model(photos, _params(settings, steps=2), Path(model.checkpoint_path), dataset=model.dataset,
                device=torch.device("cpu"), progress=False)
    ctx = WorkerContext.boot(settings, preload=False, store=store)
    result = run_and_record(ctx, sub.job, item)
    assert result.status == "done", result.message
    with store.session() as s:
        done = s.get(Item, item.id)
        model = s.exec(select(Model)).one()
    assert done is not None and done.info is not None
    assert done.info["start_step"] == 2 and done.info["step"] == 4 and done.info["model"] == "m"
    assert model.status == ModelStatus.done.value and model.step == 4 and len(model.losses) == 4
    assert model.sha256 == file_sha256(model.checkpoint_path)


def test_calibration_with_a_dataset_model_and_settings_from(tiny_model: Path, settings: Settings,
                                                            synthetic_dir: Path) -> None:
    """`gloper calibrate --param model=M.pt`: every grid setting reads the model's maps; the
    per-species choice (candidate, polarity, rho) is stored and an extract run with the model
    and --settings-from chooses exactly that candidate."""
    from gloper_jobs.jobs.calibration import calibration_of

    store = Store(settings.database_url)
    params = {"model": str(tiny_model), "size": 32, "local_sizes": "4,8"}
    cal = run_dataset(synthetic_dir, "gloper", settings, None, params, foreground=False, progress=False,
                      store=store, kind="calibrate", grid=("rho=0.3,0.5",))
    assert cal.job.status == "done" and cal.job.id is not None and cal.processed == 4 * 2
    with store.session() as s:
        learnt = calibration_of(s, cal.job.id, "gloper")
    assert set(learnt) == {"Patches", "Rosettes", "Spots", "Stripes"}
    assert all(p["model"] == str(tiny_model) and p["rho"] in (0.3, 0.5) for p in learnt.values())
    ext = run_dataset(synthetic_dir, "gloper", settings, None, params, foreground=False, progress=False,
                      store=store, settings_from=cal.job.id)
    assert ext.job.id is not None and not ext.failed
    with store.session() as s:
        for item in s.exec(select(Item).where(Item.job_id == ext.job.id)).all():
            p = learnt[item.species]
            assert item.choice == p["choice"] + ("_lighter" if p["polarity"] == "lighter" else "")
            assert item.info and item.info["polarity"]["rule"] == "fixed"


def test_calibration_takes_size_and_local_sizes_from_the_model(tiny_model: Path, settings: Settings,
                                                                synthetic_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`gloper calibrate --param model=M.pt` alone, as docs/polarity.md tells users: every
    grid setting runs at the model's S and local sizes (32, 4/8 here; the method's
    defaults differ), as an extract job does. Naming other sizes fails every run, and the
    command then says nothing was calibrated instead of printing an id to use."""
    from click.testing import CliRunner

    from gloper_jobs.cli import main
    from gloper_jobs.jobs.calibration import calibration_of

    store = Store(settings.database_url)
    cal = run_dataset(synthetic_dir, "gloper", settings, None, {"model": str(tiny_model)}, foreground=False,
                      progress=False, store=store, kind="calibrate", grid=("rho=0.4,0.6",))
    assert cal.job.id is not None and not cal.failed and cal.processed == 4 * 2
    assert all((g["size"], g["local_sizes"]) == (32, [4, 8]) for g in cal.job.params["grid"])
    with store.session() as s:
        learnt = calibration_of(s, cal.job.id, "gloper")
    assert set(learnt) == {"Patches", "Rosettes", "Spots", "Stripes"}

    monkeypatch.setenv("GLOPER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("GLOPER_RESULTS_DIR", str(settings.results_dir))
    res = CliRunner().invoke(main, ["calibrate", str(synthetic_dir), "--method", "gloper", "--no-foreground",
                                    "--no-progress", "--param", f"model={tiny_model}", "--param", "size=64",
                                    "--grid", "rho=0.5"])
    assert res.exit_code != 0, res.output
    assert "nothing was calibrated" in res.output and "size=32" in res.output, res.output
    assert not res.output.strip().splitlines()[-1].startswith("calibration ")


def test_a_version_1_checkpoint_loads_with_its_heads_renamed(tiny_model: Path, tmp_path: Path) -> None:
    """Checkpoints written before GloPER was one package named head sets by local size
    (``logits.8.weight``); they load as version 2 (by position) and extract the same weights."""
    data = torch.load(tiny_model, map_location="cpu", weights_only=True)
    sizes = [int(v) for v in data["settings"]["local_sizes"]]
    old_names = {}
    for key, value in data["state_dict"].items():
        parts = key.split(".")
        if parts[0] in ("logits", "head_a", "head_b"):
            parts[1] = str(sizes[int(parts[1])])
        old_names[".".join(parts)] = value
    assert "logits.8.weight" in old_names and "logits.1.weight" not in old_names
    old = tmp_path / "v1.pt"
    torch.save({**data, "version": 1, "state_dict": old_names}, old)
    new_ck, old_ck = load_checkpoint(tiny_model), load_checkpoint(old)
    assert old_ck.state_dict.keys() == new_ck.state_dict.keys()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for ls in sizes:
        assert torch.equal(pattern_weights(old_ck.network(), image)[ls], pattern_weights(new_ck.network(), image)[ls])


def test_training_a_finished_model_again_loads_no_photo(tmp_path: Path, settings: Settings, synthetic_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished checkpoint is answered from the file: no photo or foreground is loaded
    (on an archive that would be a u2netp pass over every photo), and a name new to it is
    recorded as done. With steps left, or other settings, it trains or refuses as before."""
    from gloper_jobs.jobs import training

    cfg = settings
    out = tmp_path / "m.pt"
    params = {**TINY, "steps": 3}
    first = train_dataset(synthetic_dir, out, cfg, params, foreground=False, progress=False, name="a")
    assert first.step == 3 and first.start_step == 0
    sha = file_sha256(out)

    def no_photos(*_: object, **__: object) -> None:
        raise AssertionError("photos loaded for a finished model")

    monkeypatch.setattr(training, "load_photos", no_photos)
    again = train_dataset(synthetic_dir, out, cfg, params, foreground=False, progress=False, name="b")
    assert (again.step, again.start_step, again.photos) == (3, 3, 4) and again.losses == first.losses
    assert file_sha256(out) == sha  # untouched
    with Store(cfg.database_url).session() as s:
        rows = {m.name: m for m in s.exec(select(Model)).all()}
    assert rows["b"].status == ModelStatus.done.value and rows["b"].step == 3 and rows["b"].sha256 == sha
    with pytest.raises(ModelSettingsError):  # another model's checkpoint is refused before any photo is read
        train_dataset(synthetic_dir, out, cfg, {**params, "local_sizes": "4"}, foreground=False, progress=False)
    with pytest.raises(AssertionError, match="photos loaded"):  # steps left: the photos are needed
        train_dataset(synthetic_dir, out, cfg, {**params, "steps": 5}, foreground=False, progress=False)
    monkeypatch.undo()
    more = train_dataset(synthetic_dir, out, cfg, {**params, "steps": 5}, foreground=False, progress=False)
    assert (more.step, more.start_step) == (5, 3)


def test_training_prepares_only_the_photos_its_steps_draw(tmp_path: Path, settings: Settings,
                                                          synthetic_dir: Path) -> None:
    """gloper train's photos are prepared when a step first draws them: on an archive of
    10^5 photos the defaults' 1,200 draws need about 1 % of the u2netp passes and the
    memory. The draws and the loss curve are those of every photo prepared up front; an
    unreadable photo is listed and its draws go to the next one; none readable fails."""
    from gloper_jobs.data.datasets import scan_dataset
    from gloper_jobs.exceptions import DatasetError
    from gloper_jobs.methods.gloper.dataset_model.train import LazyPhotos

    paths = [it.path for it in scan_dataset(synthetic_dir)]
    p = _params(settings, steps=4)
    eager = train_model(prepare_photos(paths, 32, None), p, tmp_path / "eager.pt", dataset="d",
                        device=torch.device("cpu"), progress=False)
    lazy_set = LazyPhotos(paths, 32, None)
    lazy = train_model(lazy_set, p, tmp_path / "lazy.pt", dataset="d", device=torch.device("cpu"), progress=False)
    assert lazy.losses == eager.losses and lazy.photos == eager.photos == 4 and lazy.skipped == []
    assert lazy_set.prepared == 4  # 4 steps x 2 draws over 4 photos: each prepared once, then kept

    # a large archive: 2 steps of 2 draws prepare at most 4 of its 40 photos
    many = [paths[i % 4] for i in range(40)]
    big = LazyPhotos(many, 32, None)
    train_model(big, _params(settings, steps=2), tmp_path / "big.pt", dataset="d", device=torch.device("cpu"),
                progress=False)
    assert 1 <= big.prepared <= 4

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    mixed = LazyPhotos([bad, paths[0]], 32, None, keep=1)
    images, fg = mixed.take([0, 1, 0])  # photo 0 is unreadable: its draws get photo 1
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8 and fg.dtype == torch.bool
    assert torch.equal(images[0], images[1]) and [s[0] for s in mixed.skipped] == [str(bad)]
    assert mixed.prepared == 1  # keep=1: the one readable photo stays prepared
    cycle = LazyPhotos(paths[:2], 32, None, keep=1)
    cycle.take([0, 1, 0])
    assert cycle.prepared == 3  # only the last one is kept: photo 0 is prepared again
    # 3 steps x 2 draws cover the first epoch of 5 photos: the unreadable one is drawn and reported
    r = train_model(LazyPhotos([bad, *paths], 32, None), _params(settings, steps=3), tmp_path / "mixed.pt",
                    dataset="d", device=torch.device("cpu"), progress=False)
    assert r.photos == 5 and [path for path, _ in r.skipped] == [str(bad)] and "bad.jpg" in r.skipped[0][0]
    with pytest.raises(DatasetError, match="none of the 1 photos could be read"):
        LazyPhotos([bad], 32, None).take([0])
    with pytest.raises(DatasetError, match="no photos"):
        LazyPhotos([], 32, None)
