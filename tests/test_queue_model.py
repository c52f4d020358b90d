"""Training a dataset model through the real queue: `gloper submit train --model`, Redis,
PostgreSQL and `gloper worker --gpus cpu` subprocesses; the worker is killed mid-training
and the next delivery continues from the last checkpoint."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlmodel import select

from gloper_jobs.methods.gloper.dataset_model.checkpoint import file_sha256, load_checkpoint
from gloper_jobs.store import Model
from gloper_jobs.testbed.cluster import Cluster, counts, drained, items

pytestmark = [pytest.mark.queue, pytest.mark.slow]

STEPS = 300
TINY = ["--param", "size=32", "--param", "local_sizes=4,8", "--param", "batch=2", "--param", f"steps={STEPS}",
        "--param", "checkpoint_every=10"]


def _model(cluster: Cluster, name: str) -> Model | None:
    with cluster.store().session() as s:
        return s.exec(select(Model).where(Model.name == name)).first()


def test_training_job_killed_mid_way_resumes_from_its_checkpoint_then_extracts(
        synthetic_dir: Path, database_url: str, broker_url: str, tmp_path: Path) -> None:
    cluster = Cluster(database_url, broker_url, tmp_path)
    sub = cluster.gloper("submit", "train", str(synthetic_dir), "--method", "gloper", "--model", "syn",
                         "--device-class", "cpu", "--no-foreground", *TINY)
    job = int(sub.stdout.strip().splitlines()[-1])
    assert "1 enqueued on train.cpu" in sub.stdout
    store = cluster.store()
    victim: dict[str, int] = {}

    def checkpointed() -> bool:
        model = _model(cluster, "syn")
        if model is None or model.step < 20:
            return False
        item = next(iter(items(store, job).values()))
        victim.update(step=model.step, pid=int(str(item.worker).rsplit(":", 1)[1]))
        return True

    try:
        cluster.start_worker("cpu1")
        cluster.wait_for(checkpointed, 300, "the model's second checkpoint")
        os.kill(victim["pid"], signal.SIGKILL)  # the pool process, mid-training
        cluster.wait_for(lambda: drained(store, job), 600, "the training to finish after the kill")
        # Extraction by the model's name, on the same workers.
        ex = cluster.gloper("submit", "extract", str(synthetic_dir), "--method", "gloper", "--device-class", "cpu",
                            "--no-foreground", "--param", "model=syn", "--param", "size=32",
                            "--param", "local_sizes=4,8")
        ex_job = int(ex.stdout.strip().splitlines()[-1])
        cluster.wait_for(lambda: drained(store, ex_job), 300, "the extract job with the model")
    finally:
        cluster.stop()
    assert counts(store, job) == {"done": 1}
    item = next(iter(items(store, job).values()))
    assert item.deliveries == 2 and item.info is not None
    # the second delivery started from the last checkpoint before the kill, not from 0
    assert victim["step"] <= item.info["start_step"] < STEPS and item.info["start_step"] % 10 == 0
    model = _model(cluster, "syn")
    assert model is not None and model.status == "done" and model.step == STEPS and model.job_id == job
    assert len(model.losses) == STEPS and model.photos == 4
    assert model.sha256 == file_sha256(model.checkpoint_path)
    ck = load_checkpoint(model.checkpoint_path)
    assert ck.step == STEPS and ck.losses == model.losses
    assert counts(store, ex_job) == {"done": 4}
    done = items(store, ex_job).values()
    assert all(i.info and i.info["model"] == model.checkpoint_path and i.info["model_step"] == STEPS for i in done)
