"""Fault-injection benchmark: one job through a night's faults (issue 12), JSON out.

Real Redis and PostgreSQL servers, two `gloper worker --gpus cpu` launchers, and a
job of the fake ``slow_logger`` method (``gloper_jobs.testbed.fake_methods``) (it sleeps per photo and logs each
run, so concurrent double runs are visible). In order: two concurrent submits of
the job, ``--kills`` kill -9 of pool processes mid-item, two Redis outages of
``--redis-outage`` s (``--redis-empty``: Redis comes back with no data), a PostgreSQL outage of ``--pg-outage`` s and a PostgreSQL
restart. The report gives, per fault, its recovery time (from the end of the fault
to the next finished item; for a kill, to the killed item finished), and for the
job: items lost, messages published twice, concurrent double runs, duplicate rows,
whether the workers are alive, and the launchers' restarts.

    flock /tmp/gloper-heavy.lock python -m bench.faults --photos 160 --out faults

``--partition`` runs the network faults of issue 30 instead, each on a 40-photo GloPER
job (``--device-class cpu``, size 32, 2 steps, local sizes 4,8, no foreground: the
cheapest real GloPER) on two worker nodes in network namespaces of their own, the head's
Redis and PostgreSQL in a third, the submitter on the host
(:mod:`gloper_jobs.testbed.partition`): one node cut off (every packet dropped both
ways) for ``--fault-s`` (90) s, a node that reaches Redis but not PostgreSQL and the
reverse for as long, 300 ms each way and 5 % loss on one node's link for a whole job,
and the submitter cut off in the middle of `gloper submit` of 2,000 photos, then the
same command again. At each heal a 40-photo probe job (the fake ``slow_logger``, 1 s a
photo) gives both nodes work to be seen taking. JSON in ``bench/results/``:

    flock /tmp/gloper-heavy.lock nice -n 5 python -m bench.faults --partition --out faults-partition
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import machine
from bench.services import job_id, write
from gloper_jobs.data.synthetic import make_dataset
from gloper_jobs.testbed import services as qs
from gloper_jobs.testbed.cluster import (
    GLOPER,
    Cluster,
    candidate_rows,
    counts,
    drained,
    items,
    overlapping_runs,
)


def _done(cluster: Cluster, job: int) -> int:
    try:
        return counts(cluster.store(), job).get("done", 0)
    except Exception:  # noqa: BLE001 - the store is down during its outage
        return -1


def _wait_progress(cluster: Cluster, job: int, since: int, timeout: float = 600) -> float:
    """Seconds until more than ``since`` items are done (or the job drained)."""
    t0 = time.monotonic()
    store = cluster.store()
    cluster.wait_for(lambda: _done(cluster, job) > since or drained(store, job), timeout, "progress")
    return round(time.monotonic() - t0, 1)


#: an item is a kill victim once it has run this long (a younger one may be finishing)
VICTIM_AGE_S = 0.5


def _kill_one(cluster: Cluster, job: int, killed: set[str]) -> dict[str, Any]:
    """kill -9 the pool process of an item running for a while and not killed before (the
    same item killed ``max_deliveries`` times is isolated as failed, by design: a kill per
    item keeps this a test of recovery); its recovery is read later."""
    store = cluster.store()
    victim: dict[str, Any] = {}

    def running() -> bool:
        rows = items(store, job).values()
        if rows and all(it.status in ("done", "failed", "cancelled") for it in rows):
            raise SystemExit(f"job {job} finished before an item could be killed: "
                             f"give it more work (--photos, --seconds) or fewer --kills")
        for it in rows:
            if it.rel_path not in killed and it.status == "running" and it.worker and it.started_at is not None \
                    and time.time() - it.started_at.timestamp() > VICTIM_AGE_S:
                pid = int(it.worker.rsplit(":", 1)[1])
                try:
                    os.kill(pid, 0)  # a row still naming a process killed before is not a victim
                except ProcessLookupError:
                    continue
                victim.update(item=it.rel_path, pid=pid)
                return True
        return False

    cluster.wait_for(running, 300, "an item to kill")
    killed.add(victim["item"])
    try:
        os.kill(victim["pid"], signal.SIGKILL)
    except ProcessLookupError:
        return {"fault": "kill -9 pool process", "skipped": "it had just finished"}
    killed_at = time.time()
    # The killed item goes back to the end of the queue: its recovery time is read from the
    # store once the job drained (finished_at - kill time), so the next fault need not wait.
    time.sleep(2)
    return {"fault": "kill -9 pool process", "item": victim["item"], "killed_at": killed_at}


def _kill_recoveries(cluster: Cluster, job: int, faults: list[dict[str, Any]]) -> None:
    """Fill in each kill's recovery time: until its item was finished (by another process)."""
    rows = items(cluster.store(), job)
    for fault in faults:
        if "killed_at" in fault:
            done = rows[fault["item"]].finished_at
            fault["recovery_s"] = round(done.timestamp() - fault.pop("killed_at"), 1) if done else None
            fault["note"] = "the item's message goes back to the end of the queue; recovery includes the wait behind it"


def _outage(cluster: Cluster, job: int, name: str, stop: Any, start: Any, seconds: float) -> dict[str, Any]:
    since = _done(cluster, job)
    stop()
    time.sleep(seconds)
    start()
    return {"fault": name, "outage_s": seconds, "recovery_s": _wait_progress(cluster, job, since)}


#: the cheapest honest GloPER setting (the distributed quick start's)
PARTITION_GLOPER = ["--method", "gloper", "--device-class", "cpu", "--no-foreground",
                    "--param", "size=32", "--param", "steps=2", "--param", "local_sizes=4,8"]


def partition(args: argparse.Namespace) -> Path:
    """The network faults of issue 30 (see the module's docstring), one fresh job each."""
    import json

    from gloper_jobs.testbed.partition import node_fault, partition_rig, slow_link, submitter_cut

    work = Path(tempfile.mkdtemp(prefix="gloper-partition-"))
    env = {"GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "GLOPER_STALE_SECONDS": str(args.lease_s),
           "GLOPER_HEARTBEAT_SECONDS": "5", "GLOPER_STRANDED_SECONDS": "60"}
    t0 = time.monotonic()
    faults: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with partition_rig(work, env) as rig:
        for i, fault in enumerate(args.faults.split(",")):
            photos = work / f"photos-{i}"  # a new dataset per fault: a new job
            make_dataset(photos, per_species=args.photos // 4, size=32)
            make_dataset(work / f"probe-{i}", per_species=10, size=32)
            main_job = ["submit", "extract", str(photos), *PARTITION_GLOPER]
            probe = ["submit", "extract", str(work / f"probe-{i}"), "--method", "slow_logger", "--no-foreground",
                     "--param", "seconds=1"]
            print(f"--- {fault}", flush=True)
            if fault in ("cut", "no_store", "no_broker"):
                faults.append(node_fault(rig, fault, main_job, probe, seconds=args.fault_s, workdir=work / fault))
            elif fault == "slow":
                faults.append(slow_link(rig, main_job, delay=0.3, loss=5, workdir=work / fault))
            elif fault == "submit":
                make_dataset(work / "big", per_species=500, size=8)
                faults.append(submitter_cut(rig, ["submit", "extract", str(work / "big"), *PARTITION_GLOPER],
                                            after_published=300))
            print(json.dumps(faults[-1], default=str), flush=True)
    result = {
        "machine": machine(), "load_before": load_before, "load_after": os.getloadavg(),
        "conditions": "2 shared cores; other sessions' work possibly running outside the heavy lock",
        "job": f"{args.photos} photos, gloper " + " ".join(PARTITION_GLOPER[1:]),
        "nodes": "2 x gloper worker --gpus cpu -c 2, each in its own network namespace",
        "lease_s": args.lease_s, "fault_s": args.fault_s,
        "netem": "absent from this kernel: the delay is a relay's (gloper_jobs.testbed.delay_relay), the loss nftables'",
        "wall_s": round(time.monotonic() - t0, 1), "faults": faults,
    }
    out = Path(__file__).parent / "results" / f"{args.out}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return out


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=160, help="photos in the job (a multiple of 4)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per photo (the fake method sleeps)")
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--redis-outage", type=float, default=30.0)
    ap.add_argument("--pg-outage", type=float, default=45.0)
    ap.add_argument("--redis-empty", action="store_true",
                    help="Redis comes back from each outage with no data (its files deleted)")
    ap.add_argument("--out", default="faults")
    ap.add_argument("--partition", action="store_true", help="the network faults of issue 30 instead")
    ap.add_argument("--faults", default="cut,no_store,no_broker,slow,submit", help="with --partition: which")
    ap.add_argument("--fault-s", type=float, default=90.0, help="with --partition: each node fault's length")
    ap.add_argument("--lease-s", type=float, default=30.0, help="with --partition: GLOPER_STALE_SECONDS")
    args = ap.parse_args(argv)
    if args.partition:
        if args.photos == 160:
            args.photos = 40
        return partition(args)
    if args.kills and args.seconds <= 2 * VICTIM_AGE_S:
        ap.error(f"--seconds {args.seconds}: an item is killed once it has run {VICTIM_AGE_S} s, "
                 f"so with --kills each photo must take more than {2 * VICTIM_AGE_S} s")

    work = Path(tempfile.mkdtemp(prefix="gloper-faults-"))
    make_dataset(work / "photos", per_species=max(1, args.photos // 4), size=32)
    runs = work / "runs.log"
    redis = qs.start_redis()
    pg = qs.start_postgres()
    url, _ = qs.create_database(pg.admin_url)
    cluster = Cluster(url, redis.url, work, extra_env={
        "GLOPER_PLUGINS": "gloper_jobs.testbed.fake_methods", "GLOPER_STALE_SECONDS": "20", "GLOPER_HEARTBEAT_SECONDS": "2",
        "GLOPER_STRANDED_SECONDS": "60"})
    submit = ["submit", "extract", str(work / "photos"), "--method", "slow_logger", "--no-foreground",
              "--param", f"seconds={args.seconds}", "--param", f"log={runs}"]
    faults: list[dict[str, Any]] = []
    t_start = time.monotonic()
    try:
        outs: list[subprocess.CompletedProcess[str]] = []
        threads = [threading.Thread(target=lambda: outs.append(subprocess.run(
            [*GLOPER, *submit], env=cluster.env, cwd=work, capture_output=True, text=True, timeout=300)))
            for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(o.returncode for o in outs):
            raise SystemExit("\n".join(o.stderr for o in outs))
        job = job_id(outs[0].stdout)
        n = sum(counts(cluster.store(), job).values())
        import redis as redis_py

        published = int(redis_py.Redis.from_url(redis.url).llen("extract.cpu"))
        faults.append({"fault": "2 concurrent submits", "items": n, "messages_published": published})
        launchers = [cluster.start_worker(f"w{i}", "--concurrency", "2") for i in (1, 2)]
        killed: set[str] = set()
        for _ in range(args.kills):
            faults.append(_kill_one(cluster, job, killed))

        def stop_and_wipe() -> None:
            redis.stop()
            redis.wipe()

        for i in (1, 2):
            if args.redis_empty:
                faults.append(_outage(cluster, job, f"Redis restarted empty {i}",
                                      stop_and_wipe, redis.start, args.redis_outage))
            else:
                faults.append(_outage(cluster, job, f"Redis outage {i}", redis.stop, redis.start, args.redis_outage))
        faults.append(_outage(cluster, job, "PostgreSQL outage", pg.halt, pg.resume, args.pg_outage))
        faults.append(_outage(cluster, job, "PostgreSQL restart", lambda: pg.halt("immediate"), pg.resume, 0.0))
        last_fault = time.monotonic()
        store = cluster.store()
        cluster.wait_for(lambda: drained(store, job), 1800, "the job to drain")
        last_fault_to_drained = time.monotonic() - last_fault
        _kill_recoveries(cluster, job, faults)
        alive = all(p.poll() is None for p in launchers)
        logs = {name: log.read_text(errors="replace") for name, _, log in cluster.workers}
        final = counts(store, job)
        rows = items(store, job)
        result = {
            "machine": machine(), "conditions": "other sessions' jobs possibly running outside the lock",
            "photos": n, "seconds_per_photo": args.seconds, "workers": "2 x gloper worker --gpus cpu -c 2",
            "wall_s": round(time.monotonic() - t_start, 1),
            "redis_empty": args.redis_empty,
            "last_fault_to_drained_s": round(last_fault_to_drained, 1),
            "faults": faults,
            "final_counts": final,
            "lost": n - final.get("done", 0),
            "duplicate_messages_at_submit": published - n,
            "concurrent_double_runs": overlapping_runs(runs),
            "duplicate_rows": sum(1 for _, _, c in candidate_rows(store, job) if c > 1),
            "workers_alive": alive,
            "celery_worker_restarts": sum(text.count("exited with code") for text in logs.values()),
            "unrecoverable_errors": sum(text.count("Unrecoverable error") for text in logs.values()),
            "max_deliveries": max(r.deliveries for r in rows.values()),
        }
    finally:
        cluster.stop()
        redis.remove()
        pg.stop()
    return write(args.out, result)


if __name__ == "__main__":
    main()
