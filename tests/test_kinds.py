"""The job-kind registry and the one recording path: a kind is one module and one registry line.

A toy kind registered for one test gets its queues, its Celery task name, its
`gloper submit` choice and its items run and recorded by the same functions as the
built-in kinds, in the embedded run's context and in a worker's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.exceptions import ConfigurationError, InvalidParameterError, JobNotFoundError
from gloper_jobs.jobs import queues
from gloper_jobs.jobs.candidates import CandidateRecord
from gloper_jobs.jobs.context import WorkerContext
from gloper_jobs.jobs.execution import execute_item
from gloper_jobs.jobs.kinds import (
    KINDS,
    JobKind,
    Submission,
    SubmitOption,
    SubmitRequest,
    get_kind,
    time_limits,
)
from gloper_jobs.jobs.pipeline import ItemOutcome
from gloper_jobs.jobs.recording import run_and_record
from gloper_jobs.jobs.runner import run_dataset
from gloper_jobs.jobs.spec import job_spec
from gloper_jobs.jobs.submission import enqueue_unfinished, submit
from gloper_jobs.methods.registry import register_segmenter
from gloper_jobs.settings import Settings
from gloper_jobs.store import Item, Job, Store
from gloper_jobs.store import deliveries as dl
from gloper_jobs.store import repository as repo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(database_url=f"sqlite:///{tmp_path / 'k.db'}", results_dir=tmp_path / "res",
                             stale_seconds=30, heartbeat_seconds=1)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    make_dataset(tmp_path / "photos", per_species=1)
    return tmp_path / "photos"


class CountKind(JobKind):
    """A toy kind: each item "counts" its photo's path length; a path with 'Spots' fails."""

    name = "count"
    summary = "count characters (test kind)"
    submit_options = (SubmitOption("letters", metavar="CHARS", help="Count only these characters."),)
    time_limits = (5, 10)
    drained: list[int] = []

    def record(self, store: Store, settings: Settings, request: SubmitRequest) -> Submission:
        from gloper_jobs.data.datasets import iter_dataset

        self.check_request(request)
        spec = job_spec(settings, request.dataset, request.method, None, request.params,
                        request.foreground, kind=self.name)
        with store.session() as s:
            job, created = repo.get_or_create_job(s, spec)
            added = repo.add_items(s, job, iter_dataset(request.dataset))
            job.queue = queues.queue_name(self.name, "cpu")
            dl.reopen_job(s, job)  # pending -> running, as every kind's record does
        return Submission(job, created, added)

    def run_item(self, ctx: WorkerContext, job: Job, item: Item) -> ItemOutcome:
        if "Spots" in item.rel_path:
            raise ValueError("spots are uncountable")
        record = CandidateRecord(name="count", mask_path=item.path, is_choice=True, derived=False,
                                 pattern_fraction=len(item.rel_path) / 100, scores=None)
        return ItemOutcome([record], "count", 0.0, 1, 1, None, None, "cpu", info={"length": len(item.rel_path)})

    def on_drained(self, session: Any, job: Job) -> None:
        self.drained.append(repo.require_id(job))


@pytest.fixture()
def count_kind(monkeypatch: pytest.MonkeyPatch) -> CountKind:
    kind = CountKind()
    CountKind.drained = []
    monkeypatch.setitem(KINDS, kind.name, kind)
    return kind


def test_a_registered_kind_gets_queues_tasks_and_the_recording_path(
        count_kind: CountKind, settings: Settings, dataset: Path) -> None:
    assert "count.cpu" in queues.queues_for("cpu") and "count.gpu" in queues.all_queues()
    assert queues.task_names()["count"] == "gloper.count"
    store = Store(settings.database_url)
    published: list[int] = []
    sub = submit(store, settings, "count", SubmitRequest(dataset, "kmeans"),
                 lambda job, ids: published.extend(ids) or len(ids))
    assert sub.enqueued == sub.job.n_items == 4 and len(set(published)) == 4
    ctx = WorkerContext.boot(settings, "test", preload=False)
    results = [execute_item(ctx, i) for i in published]
    assert sorted(r.status for r in results) == ["done", "done", "done", "failed"]
    failed = next(r for r in results if r.status == "failed")
    assert failed.message == "ValueError: spots are uncountable"
    with store.session() as s:
        rows = s.exec(select(Item).where(Item.job_id == sub.job.id)).all()
        done = [r for r in rows if r.status == "done"]
        assert all(r.info == {"length": len(r.rel_path)} and r.choice == "count" for r in done)
        assert repo.get_job(s, sub.job.id).status == "done"
    assert count_kind.drained == [sub.job.id]  # on_drained ran once, when the last item finished


def test_a_registered_kind_gets_its_submit_command_options_and_time_limits(
        count_kind: CountKind, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing outside the kind's class names it: `gloper submit count` and its --letters, the
    other kinds' refusal of --letters, its task's time limits."""
    from click.testing import CliRunner

    from gloper_jobs.cli import main

    monkeypatch.setenv("GLOPER_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("GLOPER_BROKER_URL", "redis://127.0.0.1:9/0")  # nothing listens: submit stops there
    runner = CliRunner()
    assert "count characters (test kind)" in runner.invoke(main, ["submit", "--help"]).output
    assert "--letters CHARS" in runner.invoke(main, ["submit", "count", "--help"]).output
    assert "--letters" not in runner.invoke(main, ["submit", "extract", "--help"]).output
    wrong = runner.invoke(main, ["submit", "extract", str(dataset), "--letters", "ab"])
    assert wrong.exit_code == 2 and "--letters belongs to `submit count`, not `submit extract`" in wrong.output
    pytest.importorskip("redis")
    taken = runner.invoke(main, ["submit", "count", str(dataset), "-m", "kmeans", "--letters", "ab"])
    assert taken.exit_code == 2 and "does not answer" in taken.output  # past the options, at the broker
    assert not (tmp_path / "cli.db").exists()
    assert time_limits(Settings.from_env(), "count") == (5, 10)
    pytest.importorskip("celery")
    from workers.app import celery_config

    assert celery_config(Settings.from_env())["task_annotations"]["gloper.count"] == {
        "soft_time_limit": 5, "time_limit": 10}


def test_the_embedded_run_and_a_worker_record_the_same_way(settings: Settings, dataset: Path,
                                                           tmp_path: Path) -> None:
    """k-means through the runner and through execute_item: same rows, same item info keys."""
    summary = run_dataset(dataset, "kmeans", settings, params={"size": 64}, foreground=False, progress=False)
    other = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'q.db'}"})
    store = Store(other.database_url)
    ids: list[int] = []
    sub = submit(store, other, "extract", SubmitRequest(dataset, "kmeans", params={"size": 64}, foreground=False),
                 lambda job, chunk: ids.extend(chunk) or len(chunk))
    ctx = WorkerContext.boot(other, "test", preload=False)
    assert {execute_item(ctx, i).status for i in ids} == {"done"}

    def rows(url: str, job_id: int) -> list[tuple[str, str | None, list[str]]]:
        with Store(url).session() as s:
            items = s.exec(select(Item).where(Item.job_id == job_id).order_by(Item.rel_path)).all()
            return [(i.rel_path, i.choice, sorted(i.info or {})) for i in items]

    embedded = rows(settings.database_url, summary.job.id)
    queued = rows(other.database_url, sub.job.id)
    assert embedded == queued and all("timings" in keys for _, _, keys in embedded)


def test_run_and_record_isolates_a_bad_photo(settings: Settings, dataset: Path) -> None:
    (dataset / "Stripes" / "broken.jpg").write_bytes(b"not a jpeg")
    store = Store(settings.database_url)
    sub = get_kind("extract").record(store, settings, SubmitRequest(dataset, "kmeans", foreground=False))
    ctx = WorkerContext.boot(settings, preload=False, store=store)
    with store.session() as s:
        items = repo.items_with_status(s, repo.require_id(sub.job), ["pending"])
    results = {it.rel_path: run_and_record(ctx, sub.job, it) for it in items}
    bad = results["Stripes/broken.jpg"]
    assert bad.status == "failed" and "broken.jpg" in (bad.message or "")
    assert sum(r.status == "done" for r in results.values()) == len(items) - 1


def test_kind_options_belong_to_their_kind(settings: Settings, dataset: Path) -> None:
    store = Store(settings.database_url)
    with pytest.raises(InvalidParameterError, match="--grid belongs to `submit calibrate`"):
        get_kind("extract").record(store, settings, SubmitRequest(dataset, "gloper", grid=("steps=2",)))
    with pytest.raises(InvalidParameterError, match="--settings-from belongs to `submit extract`"):
        get_kind("calibrate").record(store, settings, SubmitRequest(dataset, "gloper", grid=("steps=2",),
                                                                     settings_from=1))
    with pytest.raises(ConfigurationError, match="extract, evaluate, calibrate, train"):
        get_kind("nope")


def test_a_missing_job_is_one_error_naming_the_command(settings: Settings) -> None:
    with pytest.raises(JobNotFoundError, match="gloper jobs"):
        repo.require_id(Job(key="k", dataset="d", method="m", results_dir=""))
    with Store(settings.database_url).session() as s, pytest.raises(JobNotFoundError, match="gloper jobs"):
        repo.get_job(s, 424242)


def test_register_segmenter_refuses_a_taken_name() -> None:
    from gloper_jobs.methods.classical import KMeansSegmenter

    class Impostor(KMeansSegmenter):
        name = "watershed"

    assert register_segmenter(KMeansSegmenter) is KMeansSegmenter  # the same class again: a no-op
    with pytest.raises(InvalidParameterError, match="taken by"):
        register_segmenter(Impostor)


def test_gloper_run_loads_plugins(tmp_path: Path, dataset: Path) -> None:
    """GLOPER_PLUGINS reaches the embedded run too (gloper_jobs.testbed.fake_methods registers `noop`)."""
    env = {"GLOPER_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "GLOPER_RESULTS_DIR": str(tmp_path / "r"),
           "GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "gloper_jobs.cli", "run", str(dataset), "-m", "noop",
                          "--no-foreground", "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "4 processed" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "gloper_jobs.cli", "run", str(dataset), "-m", "noop",
                          "--no-foreground"], capture_output=True, text=True, timeout=300,
                         env={**env, "GLOPER_PLUGINS": "no_such_plugin_module"})
    assert bad.returncode == 2 and "no_such_plugin_module" in bad.stderr and "Traceback" not in bad.stderr


def test_enqueue_needs_a_stored_job(settings: Settings) -> None:
    with pytest.raises(JobNotFoundError):
        enqueue_unfinished(Store(settings.database_url), Job(key="k", dataset="d", method="m", results_dir=""),
                           lambda job, ids: len(ids), batch=10)


def test_the_reconciler_path_and_the_launcher_load_no_torch() -> None:
    """A worker's main process imports these; torch there would be inherited by forked pool
    processes in a broken OpenMP state (issue [ops] 4)."""
    code = ("import sys\n"
            "import workers.runtime, workers.launcher, workers.tasks, gloper_jobs.cli\n"
            "from gloper_jobs.jobs.submission import reconcile\n"
            "from gloper_jobs.jobs import execution, recording, runner\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "TORCH False" in out.stdout
