"""Load test: thousands of real jobs through the real stack, none lost, none run twice.

    python -m bench.load [--jobs 5000] [--clients 32] [--timeout 900]

Starts its own stack on loopback (gunicorn, scheduler, beat, agents node-a with
4 fake A100s and node-b with 2 fake H100s, the processes of tests/integration/harness.py)
against a database of its own on the local Postgres and a redis-server of its own
on a free port, so it disturbs nothing else. ``--clients`` threads submit
``--jobs`` one-GPU ``true`` jobs (real processes, run by the agents); then it
waits, at most ``--timeout`` seconds, for every job to end, and checks in Postgres
that every accepted job is there once, ended DONE, on attempt 1, started exactly
once. Prints the figures (and writes them to bench/results/load.json); exits 1 if
a check fails. Not part of ``make test``: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import PrivateRedis, Stack

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"


def submit_all(api: str, ids: list[str], clients: int) -> tuple[dict[str, int], list[float], float]:
    """POST every job from ``clients`` threads; (final status by id, latencies, wall seconds)."""
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [ids[i::clients] for i in range(clients)]

    def client(chunk: list[str]) -> None:
        session = requests.Session()
        for job_id in chunk:
            body = {"job_id": job_id, "cmd": ["true"], "gpus": 1}
            for _ in range(5):  # a broken connection is retried with the same id (409 = stored)
                started = time.perf_counter()
                try:
                    status = session.post(f"{api}/api/jobs", json=body, timeout=60).status_code
                except requests.RequestException:
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[job_id] = status
                break

    threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, latencies, time.perf_counter() - began


def wait_all_ended(engine: Any, expected: int, timeout: float) -> tuple[float, dict[str, int]]:
    """Seconds until ``expected`` jobs have ended (or the timeout), and the count by state."""
    began = time.perf_counter()
    while True:
        with engine.connect() as conn:
            by_state = dict(conn.execute(text("select status, count(*) from jobs group by 1")).all())
        ended = sum(by_state.get(s, 0) for s in ("DONE", "FAILED", "CANCELLED"))
        if ended >= expected or time.perf_counter() - began > timeout:
            return time.perf_counter() - began, by_state
        time.sleep(1)


def audit(engine: Any, accepted: set[str]) -> dict[str, Any]:
    """What Postgres says about every job: lost, unexpected, not DONE, retried, run twice."""
    with engine.connect() as conn:
        rows = conn.execute(text("select job_id, status, attempt, node from jobs")).all()
        runs = dict(conn.execute(text(
            "select job_id, count(*) from job_events where to_state = 'RUNNING' group by 1")).all())
    stored = {r.job_id for r in rows}
    return {
        "lost": sorted(accepted - stored)[:20],
        "unexpected": sorted(stored - accepted)[:20],
        "not_done": sorted(r.job_id for r in rows if r.status != "DONE")[:20],
        "retried": sorted(r.job_id for r in rows if r.attempt != 1)[:20],
        "started_not_once": sorted(j for j in stored if runs.get(j, 0) != 1)[:20],
        "by_node": dict(Counter(r.node for r in rows)),
    }


def run(jobs: int, clients: int, timeout: float) -> dict[str, Any]:
    database_url = f"{PG_SERVER}/overlay_load_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    ensure_database(database_url)
    migrate(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="overlay-load-"))
    redis = PrivateRedis(workdir)
    redis.start()
    stack = Stack(database_url=database_url, redis_url=redis.url, workdir=workdir,
                  # Heartbeats and reconcile at the defaults a deployment uses, not the tests' 1 s.
                  HEARTBEAT_INTERVAL_S="5", RECONCILE_INTERVAL_S="3", NODE_TTL_S="15")
    engine = create_engine(database_url)
    try:
        stack.start_cluster()
        ids = [f"load-{i:05d}" for i in range(jobs)]
        statuses, latencies, submit_s = submit_all(stack.api, ids, clients)
        accepted = {j for j, s in statuses.items() if s in (201, 409)}
        drain_s, by_state = wait_all_ended(engine, len(accepted), timeout)
        found = audit(engine, accepted)
        latencies.sort()
        return {
            "jobs": jobs,
            "clients": clients,
            "answers": dict(Counter(statuses.values())),
            "unanswered": jobs - len(statuses),
            "submit_seconds": round(submit_s, 2),
            "submits_per_second": round(len(statuses) / submit_s, 1),
            "submit_latency_ms": {
                "p50": round(1000 * statistics.median(latencies), 1),
                "p99": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 1),
                "max": round(1000 * latencies[-1], 1),
            },
            "all_ended_seconds_after_last_submit": round(drain_s, 1),
            "jobs_per_second_end_to_end": round(len(accepted) / (submit_s + drain_s), 1),
            "by_state": by_state,
            **found,
        }
    finally:
        stack.stop_all()
        redis.kill()
        engine.dispose()
        drop_database(database_url)


def failures(figures: dict[str, Any]) -> list[str]:
    checks = ("lost", "unexpected", "not_done", "retried", "started_not_once")
    problems = [f"{k}: {figures[k]}" for k in checks if figures[k]]
    if figures["unanswered"] or set(figures["answers"]) - {201}:
        problems.append(f"submits not all 201: {figures['answers']}, unanswered {figures['unanswered']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all to end")
    args = parser.parse_args(argv)
    # A SIGTERM (a timeout) still stops the stack and drops the database on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    figures = run(args.jobs, args.clients, args.timeout)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    problems = failures(figures)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
