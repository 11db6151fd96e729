"""Placement benchmark: one decision per policy as the fleet grows, and a 10,000-job pass.

Run ``python -m bench.placement [--quick]``; ``run(quick)`` returns the figures for ``make bench``.
A decision is timed against a fleet whose views are already built (the first request of
each shape builds its view in O(nodes); a scheduling pass pays that once per shape).

The pass is timed twice: the in-memory plan (overlay/queueing.py ``plan_pass``) and the
scheduler's whole pass (workers/scheduler.py ``schedule_pass``, then sending every
``run_job``) over a scratch database of 10,000 queued jobs and 1,000 registered nodes:
reading the queue and the fleet, writing every placement, one broker message per placement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from overlay.fleet import Fleet
from overlay.model import GpuDevice, JobSpec, NodeSnapshot, NodeState
from overlay.placement import place
from overlay.policies import POLICIES
from overlay.queueing import QueuedJob, plan_pass

NODE_COUNTS = (10, 100, 1_000, 5_000)
GPUS_PER_NODE = 8
# (name, MiB): the models a mixed fleet holds.
MODELS = (
    ("NVIDIA A100-SXM4-80GB", 81920),
    ("NVIDIA A100-PCIE-40GB", 40960),
    ("NVIDIA H100 80GB HBM3", 81559),
    ("NVIDIA L4", 23034),
    ("NVIDIA A10", 23028),
)
ZONES = ("a", "b", "c", "d")
TIERS = ("prod", "dev")
# (gpus, gpu_memory_mb, gpu_model, node_selector): the request mix.
REQUESTS = (
    (1, 0, "", {}),
    (2, 0, "", {}),
    (4, 0, "", {}),
    (8, 0, "", {}),
    (1, 40000, "", {}),
    (2, 0, "a100", {}),
    (4, 80000, "h100", {}),
    (1, 0, "l4", {"zone": "b"}),
    (2, 0, "", {"tier": "prod"}),
    (4, 0, "a100", {"zone": "a", "tier": "prod"}),
    (0, 0, "", {"zone": "c"}),
)


def make_nodes(count: int, *, seed: int = 0) -> list[NodeSnapshot]:
    """``count`` nodes of 8 GPUs, half of them taken; one node in ten mixes two models."""
    rng = random.Random(seed)
    nodes = []
    for n in range(count):
        first, second = rng.choice(MODELS), rng.choice(MODELS)
        models = [first] * 4 + [second if n % 10 == 0 else first] * 4
        gpus = tuple(GpuDevice(index=i, uuid=f"GPU-{n}-{i}", name=name, memory_total_mb=mb)
                     for i, (name, mb) in enumerate(models))
        state = NodeState.DRAINING if n % 50 == 7 else NodeState.ONLINE
        nodes.append(NodeSnapshot(
            name=f"node-{n:05d}", gpus=gpus, state=state,
            labels={"zone": rng.choice(ZONES), "tier": rng.choice(TIERS)},
            taken=frozenset(rng.sample(range(GPUS_PER_NODE), GPUS_PER_NODE // 2)),
        ))
    return nodes


def make_jobs(count: int, *, seed: int = 0) -> list[QueuedJob]:
    """``count`` queued jobs drawn from the request mix, priorities 0-2, a second apart."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    jobs = []
    for i in range(count):
        gpus, mem, model, selector = rng.choice(REQUESTS)
        spec = JobSpec(job_id=f"job-{i}", cmd=("true",), gpus=gpus, gpu_memory_mb=mem,
                       gpu_model=model, node_selector=selector, priority=rng.choice((0, 0, 1, 2)))
        jobs.append(QueuedJob(spec=spec, enqueued_at=start + timedelta(seconds=i)))
    return jobs


def decision_us(nodes: int, policy: Callable, repeats: int) -> float:
    """Median µs of one ``place`` over the request mix, on a warm fleet of ``nodes``."""
    fleet = Fleet.from_snapshots(make_nodes(nodes))
    specs = [job.spec for job in make_jobs(len(REQUESTS) * 4, seed=1)]
    for spec in specs:  # build each shape's view, as the first job of a pass would
        place(spec, fleet, policy=policy)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        for spec in specs:
            t0 = clock()
            place(spec, fleet, policy=policy)
            samples.append(clock() - t0)
    return statistics.median(samples) / 1_000


def pass_ms(nodes: int, jobs: int, repeats: int, *, memo: bool = True) -> tuple[float, float]:
    """Median ms of building the fleet, and of a first-fit pass of ``jobs`` over it."""
    snapshots, queue = make_nodes(nodes), make_jobs(jobs)
    builds, passes = [], []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fleet = Fleet.from_snapshots(snapshots)
        t1 = time.perf_counter_ns()
        plan_pass(queue, fleet, policy=POLICIES["first-fit"], memo=memo)
        t2 = time.perf_counter_ns()
        builds.append(t1 - t0)
        passes.append(t2 - t1)
    return statistics.median(builds) / 1e6, statistics.median(passes) / 1e6


def fill_database(url: str, nodes: int, jobs: int) -> None:
    """Register ``nodes`` nodes (their GPUs all free, no slot limit) and queue ``jobs`` jobs
    in the (migrated) database at ``url``, through the store's own writes."""
    from overlay.model import ProbeReport
    from overlay.store import jobs as job_store
    from overlay.store import nodes as node_store
    from overlay.store.session import make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as s:
            for node in make_nodes(nodes):
                node_store.record_heartbeat(s, name=node.name, hostname=node.name, labels=dict(node.labels),
                                            report=ProbeReport(mode="fake", gpus=node.gpus), agent_health={})
            for job in make_jobs(jobs):
                job_store.insert_job(s, job.spec)
    finally:
        engine.dispose()


def _admin(server: str) -> object:
    from sqlalchemy import create_engine

    return create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")


def db_pass_rounds(server: str, template: str, rounds: int) -> dict:
    """In this process (whose Celery app sends to REDIS_URL): ``rounds`` times, copy the
    template database, mark its nodes seen now, and time ``schedule_pass`` and the sends."""
    import redis
    from sqlalchemy import text

    from overlay.store.session import make_engine, make_sessionmaker
    from workers import scheduler
    from workers.app import app
    from workers.tasks import send_run_jobs

    admin = _admin(server)
    totals, sends, placed, alone = [], [], 0, []
    for k in range(rounds):
        # Side by side: the pass as it runs (placements written together) and one job at a
        # time (jobs.place per job, as before overlay/store/placing.py), alternating first.
        for batch in ((True, False) if k % 2 == 0 else (False, True)):
            name = f"{template}_r{uuid.uuid4().hex[:6]}"
            with admin.connect() as conn:  # type: ignore[attr-defined]
                conn.execute(text(f'create database "{name}" template "{template}"'))
            engine = make_engine(f"{server}/{name}")
            try:
                with engine.begin() as conn:  # registered a while ago: seen now, as heartbeats would
                    conn.execute(text("update nodes set last_seen = clock_timestamp()"))
                sessions = make_sessionmaker(engine)
                t0 = time.perf_counter_ns()
                messages = scheduler.schedule_pass(sessions, app.settings, batch=batch).runs
                t1 = time.perf_counter_ns()
                if batch:
                    send_run_jobs(messages)
                t2 = time.perf_counter_ns()
            finally:
                engine.dispose()
                with admin.connect() as conn:  # type: ignore[attr-defined]
                    conn.execute(text(f'drop database if exists "{name}" with (force)'))
            if not batch:
                print(f"bench: database pass, one placement at a time: schedule_pass "
                      f"{(t1 - t0) / 1e6:.0f} ms for {len(messages)}", file=sys.stderr, flush=True)
                alone.append(t1 - t0)
                continue
            print(f"bench: database pass: schedule_pass {(t1 - t0) / 1e6:.0f} ms, sending {len(messages)} "
                  f"run_job {(t2 - t1) / 1e6:.0f} ms", file=sys.stderr, flush=True)
            totals.append(t2 - t0)
            sends.append(t2 - t1)
            placed = len(messages)
            redis.Redis.from_url(app.settings.redis_url).flushdb()  # a thousand assign: queues nobody reads
    admin.dispose()  # type: ignore[attr-defined]
    return {"pass_10k_db_ms": statistics.median(totals) / 1e6,
            "pass_10k_db_send_ms": statistics.median(sends) / 1e6, "pass_10k_db_placed": placed,
            "pass_10k_db_one_by_one_ms": statistics.median(alone) / 1e6}


def db_pass(server: str, redis_url: str, rounds: int, *, nodes: int = 1_000, jobs: int = 10_000) -> dict:
    """The scheduler's whole pass over a scratch database, timed in a child process (the
    Celery app reads its broker from the environment when it is imported)."""
    from overlay.store.session import ensure_database, migrate

    template = f"overlay_bench_pass_{uuid.uuid4().hex[:8]}"
    url = f"{server}/{template}"
    ensure_database(url)
    try:
        migrate(url)
        fill_database(url, nodes, jobs)
        child = subprocess.run(
            [sys.executable, "-m", "bench.placement", "--db-pass-child", server, template, str(rounds)],
            env={**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"},
            stdout=subprocess.PIPE, text=True, timeout=900, check=False,
        )
        if child.returncode != 0:
            raise RuntimeError(f"the database pass failed (exit {child.returncode})")
        return json.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        from tests.conftest import drop_database

        drop_database(url)


def run(quick: bool = False, *, server: str | None = None, redis_url: str | None = None,
        db_size: tuple[int, int] = (1_000, 10_000)) -> dict:
    """Time it all; {"placement_median_us": {policy: {nodes: us}}, "pass_10k_ms": ms, ...};
    with ``server`` (a Postgres URL without database) and ``redis_url``, the database pass
    too, over ``db_size`` (nodes, jobs)."""
    repeats = 20 if quick else 200
    medians = {
        name: {n: decision_us(n, policy, repeats) for n in NODE_COUNTS}
        for name, policy in POLICIES.items()
    }
    rounds = 3 if quick else 7
    build, passed = pass_ms(1_000, 10_000, rounds)
    _, unmemo = pass_ms(1_000, 10_000, rounds, memo=False)
    figures = {"placement_median_us": medians, "pass_10k_ms": passed,
               "pass_10k_no_memo_ms": unmemo, "fleet_build_1k_ms": build}
    if server and redis_url:
        nodes, jobs = db_size
        figures.update(db_pass(server, redis_url, 1 if quick else 3, nodes=nodes, jobs=jobs))
    return figures


def report(figures: dict) -> str:
    """The figures as a plain-text table."""
    head = "policy      " + "".join(f"{n:>10,}" for n in NODE_COUNTS) + "   (median µs per decision)"
    rows = [f"{name:<12}" + "".join(f"{us[n]:>10.1f}" for n in NODE_COUNTS)
            for name, us in figures["placement_median_us"].items()]
    tail = [f"pass of 10,000 jobs on 1,000 nodes, in memory: {figures['pass_10k_ms']:.1f} ms "
            f"(without the shape memo {figures['pass_10k_no_memo_ms']:.1f} ms; "
            f"building the fleet {figures['fleet_build_1k_ms']:.1f} ms)"]
    if "pass_10k_db_ms" in figures:
        tail.append(f"the scheduler's pass with Postgres and the sends: {figures['pass_10k_db_ms']:.0f} ms "
                    f"(of which sending {figures['pass_10k_db_placed']} run_job: "
                    f"{figures['pass_10k_db_send_ms']:.0f} ms)")
    if "pass_10k_db_one_by_one_ms" in figures:
        alone = figures["pass_10k_db_one_by_one_ms"]
        tail.append(f"the same pass writing one placement at a time: {alone:.0f} ms without the sends "
                    f"({alone / figures['pass_10k_db_ms']:.1f}x)")
    return "\n".join([head, *rows, "", *tail])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--db", action="store_true",
                        help="also the scheduler's pass over a scratch database (local Postgres)")
    parser.add_argument("--db-pass-child", nargs=3, metavar=("SERVER", "TEMPLATE", "ROUNDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.db_pass_child:
        server, template, rounds = args.db_pass_child
        print(json.dumps(db_pass_rounds(server, template, int(rounds))))
        return
    if args.db:
        from tests.conftest import PG_SERVER

        redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
        print(report(run(quick=args.quick, server=PG_SERVER, redis_url=redis_url)))
        return
    print(report(run(quick=args.quick)))


if __name__ == "__main__":
    main()
