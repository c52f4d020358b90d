"""The store: migrations and idempotent writes, on SQLite and (when reachable) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import func, select

from gloper_jobs.data.datasets import DatasetItem
from gloper_jobs.exceptions import ConfigurationError, StoreUnavailableError
from gloper_jobs.jobs.candidates import CandidateRecord
from gloper_jobs.store import Candidate, Item, ItemStatus, Job, Store
from gloper_jobs.store import repository as repo
from gloper_jobs.store.db import head_revision
from gloper_jobs.store.models import utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store URL: a SQLite file, or a new database on the tests' own PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
    else:
        yield request.getfixturevalue("database_url")


def _spec(tmp: str = "/tmp/r", **params: object) -> repo.JobSpec:
    return repo.JobSpec(kind="extract", dataset="/data/archive", method="kmeans", params={"size": 64, **params},
                        profile=None, foreground_model="u2netp", eval_size=256, results_root=tmp)


def _items(n: int) -> list[DatasetItem]:
    return [DatasetItem(f"Zebra/{i:05d}.jpg", Path(f"/data/archive/Zebra/{i:05d}.jpg"), "Zebra", None) for i in range(n)]


def test_migrations_create_the_schema(store_url: str) -> None:
    store = Store(store_url)
    names = set(inspect(store.engine).get_table_names())
    assert {"job", "item", "candidate", "alembic_version"} <= names
    Store(store_url)  # migrating again is a no-op
    with store.engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head_revision()
    store.dispose()


def test_writes_are_idempotent(store_url: str) -> None:
    store = Store(store_url)
    with store.session() as s:
        job, created = repo.get_or_create_job(s, _spec())
        assert created and job.results_dir.endswith(f"job-{job.id:05d}-kmeans")
        assert repo.add_items(s, job, _items(5)) == 5
    with store.session() as s:
        again, created = repo.get_or_create_job(s, _spec())
        assert not created and again.id == job.id
        assert repo.add_items(s, again, _items(7)) == 2
        other, created = repo.get_or_create_job(s, _spec(size=128))  # other settings, other job
        assert created and other.id != job.id
    with store.session() as s:
        item = s.exec(select(Item).where(Item.job_id == job.id)).first()
        cands = [CandidateRecord("cluster_0", "/r/a.png", True, False, 0.3, {"dice": 0.5, "iou": 0.3,
                                                                              "precision": 0.4, "recall": 0.6}),
                 CandidateRecord("cluster_1", "/r/b.png", False, False, 0.7, None)]
        for _ in range(3):  # a redelivered task writes the same result again
            repo.record_success(s, item.id, cands, choice="cluster_0", seconds=1.0, width=10, height=8,
                                foreground_fraction=0.5, foreground_fallback=False, note=None, host="h", device="cpu")
    with store.session() as s:
        assert s.exec(select(func.count()).select_from(Job)).one() == 2
        assert s.exec(select(func.count()).select_from(Item).where(Item.job_id == job.id)).one() == 7
        rows = s.exec(select(Candidate).where(Candidate.item_id == item.id)).all()
        assert sorted(c.name for c in rows) == ["cluster_0", "cluster_1"]
        assert repo.status_counts(s, job.id) == {ItemStatus.done.value: 1, ItemStatus.pending.value: 6}
        repo.record_failure(s, item.id + 1, "bad photo", "Traceback ...")
        failed = repo.latest_errors(s, job.id)
        assert [f.error for f in failed] == ["bad photo"]
        assert repo.reset_items(s, job.id, [ItemStatus.failed.value]) == 1
    store.dispose()


def test_unreachable_store_says_how_to_fix() -> None:
    with pytest.raises(StoreUnavailableError, match="GLOPER_DATABASE_URL"):
        Store("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(ConfigurationError, match="not a database URL"):
        Store("definitely not a url")


def test_migration_0008_renames_the_kinds_and_keys_stored_jobs_as_a_new_submission_would(tmp_path: Path) -> None:
    """Stored `train` (calibration) jobs become `calibrate` on calibrate.* queues, then `train_model`
    jobs become `train`; each key is the one the renamed kind computes, and downgrading restores both."""
    from dataclasses import replace

    from alembic import command
    from sqlmodel import Session

    from gloper_jobs.store.db import _alembic_config, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0007")
    sweep = replace(_spec(), kind="train", method="gloper", params={"grid": [{"rho": 0.4}, {"rho": 0.5}]})
    model = replace(_spec(), kind="train_model", method="gloper", params={"model": "m", "steps": 10})
    extract = _spec()
    specs = {"sweep": (sweep, "train.gpu"), "model": (model, "train.cpu"), "extract": (extract, "extract.cpu")}
    import sqlalchemy as sa

    # Core statements over the columns of revision 0007 (the model has columns of later revisions)
    table = Job.__table__  # type: ignore[attr-defined]
    ids = {}
    with Session(engine) as s:
        for name, (spec, queue) in specs.items():
            row = {"key": spec.key, "kind": spec.kind, "dataset": spec.dataset, "method": spec.method,
                   "params": spec.params, "profile": spec.profile, "foreground_model": spec.foreground_model,
                   "eval_size": spec.eval_size, "results_dir": spec.results_root, "status": "pending",
                   "n_items": 0, "queue": queue, "source": spec.source,
                   "created_at": utcnow(), "updated_at": utcnow()}
            # a table of these columns only: the model's Python-side defaults name later columns
            old = sa.table("job", sa.column("id"), *(sa.column(c, table.c[c].type) for c in row))
            ids[name] = s.execute(sa.insert(old).values(**row).returning(old.c.id)).scalar_one()
        s.commit()

    def stored() -> dict[str, tuple[str, str | None, str]]:
        with Session(engine) as s:
            rows = s.execute(sa.select(table.c.id, table.c.kind, table.c.queue, table.c.key)).all()
        by_id = {r.id: (r.kind, r.queue, r.key) for r in rows}
        return {name: by_id[i] for name, i in ids.items()}

    before = stored()
    command.upgrade(cfg, "head")
    assert stored() == {
        "sweep": ("calibrate", "calibrate.gpu", replace(sweep, kind="calibrate").key),
        "model": ("train", "train.cpu", replace(model, kind="train").key),
        "extract": before["extract"],
    }
    command.downgrade(cfg, "0007")
    assert stored() == before
    engine.dispose()


def test_migration_0009_adds_the_species_polarity_column(tmp_path: Path) -> None:
    """0009 adds job.species_polarity (JSON, empty for old jobs) and downgrading drops it."""
    from alembic import command

    from gloper_jobs.store.db import _alembic_config, make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0008")
    assert "species_polarity" not in {c["name"] for c in inspect(engine).get_columns("job")}
    command.upgrade(cfg, "0009")
    assert "species_polarity" in {c["name"] for c in inspect(engine).get_columns("job")}
    command.downgrade(cfg, "0008")
    assert "species_polarity" not in {c["name"] for c in inspect(engine).get_columns("job")}
    engine.dispose()
