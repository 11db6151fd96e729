"""History at scale: a million jobs and five million events, bulk-loaded; how long a scrape,
a filtered page and a job's events take on them.

    python -m bench.history [--jobs 1000000] [--events-per-job 5] [--repeats 21] [--keep]

Creates a scratch database of its own on the local Postgres (dropped at the end unless
``--keep``), migrates it, loads the rows with generate_series in a few statements (not
through the API: that would take hours) with the counting triggers off, and rebuilds the
job counters from the rows, as migration 0004 seeds them. Then it times, median of
``--repeats``: ``GET /metrics`` in process (Flask's test client) and over HTTP (a gunicorn
of its own on a free loopback port), ``GET /api/jobs?state=...&limit=50`` for every state,
and a job's events. Prints a table and writes bench/results/history.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text
from sqlalchemy.engine import Connection

from overlay.states import JobState

RESULTS = Path(__file__).resolve().parent / "results" / "history.json"
ROOT = Path(__file__).resolve().parents[1]

# Of every 100 jobs: 1 queued, 1 placed, 2 running, 3 failed, 2 cancelled, the rest done.
STATE_OF = "(CASE WHEN i % 100 = 0 THEN 'QUEUED' WHEN i % 100 = 1 THEN 'PLACED' " \
           "WHEN i % 100 IN (2, 3) THEN 'RUNNING' WHEN i % 100 IN (4, 5, 6) THEN 'FAILED' " \
           "WHEN i % 100 IN (7, 8) THEN 'CANCELLED' ELSE 'DONE' END)"

LOAD_JOBS = f"""
INSERT INTO jobs (job_id, status, cmd, image, env, gpus, gpu_memory_mb, gpu_model, node_selector,
                  priority, max_retries, memory_mb, attempt, node, gpu_indices, exit_code, log_tail,
                  enqueued_at, placed_at, started_at, finished_at)
SELECT 'hist-' || i, s, '["true"]', '', '{{}}', 1, 0, '', '{{}}', 0, 0, 0,
       CASE WHEN s = 'QUEUED' THEN 0 ELSE 1 END,
       CASE WHEN s = 'QUEUED' THEN NULL ELSE 'node-' || (i % 100) END,
       CASE WHEN s = 'QUEUED' THEN '[]'::jsonb ELSE '[0]'::jsonb END,
       CASE WHEN s IN ('DONE', 'FAILED') THEN (s = 'FAILED')::int END, '',
       t, CASE WHEN s <> 'QUEUED' THEN t + interval '200 ms' END,
       CASE WHEN s NOT IN ('QUEUED', 'PLACED') THEN t + interval '400 ms' END,
       CASE WHEN s IN ('DONE', 'FAILED', 'CANCELLED') THEN t + interval '10 s' END
FROM (SELECT i, {STATE_OF} AS s, :start + i * interval '10 ms' AS t
      FROM generate_series(1, :jobs) AS i) g
"""

# Each job's events: submitted, then placed, running and its end, then filler (a retry's
# QUEUED/PLACED) up to events_per_job; a queued job has only its first.
LOAD_EVENTS = f"""
INSERT INTO job_events (job_id, at, from_state, to_state, attempt, node, gpu_indices, reason)
SELECT 'hist-' || i, :start + i * interval '10 ms' + k * interval '100 ms',
       CASE WHEN k = 1 THEN NULL ELSE 'QUEUED' END,
       CASE WHEN k = 1 THEN 'QUEUED' WHEN k = 2 THEN 'PLACED' WHEN k = 3 THEN 'RUNNING'
            WHEN k = 4 THEN {STATE_OF} ELSE 'PLACED' END,
       1, 'node-' || (i % 100), '[0]'::jsonb, NULL
FROM generate_series(1, :jobs) AS i, generate_series(1, :per_job) AS k
WHERE i % 100 <> 0 OR k = 1
"""


def load(conn: Connection, *, jobs: int, events_per_job: int, start: Any) -> None:
    """Insert ``jobs`` jobs and about ``events_per_job`` events each, counting triggers off,
    then rebuild the counters from the rows and ANALYZE (as autovacuum would soon)."""
    from overlay.store import counters

    conn.execute(text("SET LOCAL session_replication_role = replica"))  # no triggers, no FK checks
    conn.execute(text(LOAD_JOBS), {"jobs": jobs, "start": start})
    conn.execute(text(LOAD_EVENTS), {"jobs": jobs, "per_job": events_per_job, "start": start})
    conn.execute(text("SET LOCAL session_replication_role = origin"))
    counters.rebuild_on(conn)


# What the scrape and the list total sent before the job counters (commit fdc74e3^^): every
# job and event read on each scrape. Timed once each (seconds apiece at a million jobs).
OLD_SCRAPE = (
    "select status, count(*) from jobs group by status",
    "select to_state, count(*) from job_events group by to_state",
    "select count(*) from job_events where from_state is null",
    "select count(*), sum(extract(epoch from placed_at - enqueued_at)) from jobs "
    "where placed_at is not null",
    "select count(*), sum(extract(epoch from started_at - enqueued_at)) from jobs "
    "where started_at is not null",
)
OLD_LIST_TOTAL = "select count(*) from jobs where status = 'DONE'"


def old_queries_ms(database_url: str) -> dict[str, float]:
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    with engine.connect() as conn:
        def timed(sql: str) -> float:
            t = time.perf_counter()
            conn.execute(text(sql)).all()
            return (time.perf_counter() - t) * 1000

        result = {"old_scrape_queries_ms": round(sum(timed(q) for q in OLD_SCRAPE), 1),
                  "old_list_total_done_ms": round(timed(OLD_LIST_TOTAL), 1)}
    engine.dispose()
    return result


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm: connections, caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(database_url: str, repeats: int, *, job_id: str) -> dict[str, Any]:
    from overlay.config import Settings
    from overlay.store.session import make_engine, make_sessionmaker
    from web.app import create_app

    settings = Settings.from_env({**os.environ, "DATABASE_URL": database_url})
    client = create_app(settings).test_client()

    def get(path: str) -> None:
        r = client.get(path)
        assert r.status_code == 200, r.text

    figures: dict[str, Any] = {"metrics_in_process_ms": median_ms(lambda: get("/metrics"), repeats)}
    figures["list_ms"] = {s.value: median_ms(lambda s=s: get(f"/api/jobs?state={s.value}&limit=50"), repeats)
                          for s in JobState}
    figures["list_all_ms"] = median_ms(lambda: get("/api/jobs?limit=50"), repeats)
    sessions = make_sessionmaker(make_engine(database_url))
    figures["events_ms"] = median_ms(lambda: events(sessions, job_id), repeats)
    figures["store_list_ms"] = {s.value: median_ms(lambda s=s: store_page(sessions, s), repeats)
                                for s in JobState}
    figures["store_counters_ms"] = median_ms(lambda: store_counters(sessions), repeats)
    figures["metrics_http_ms"] = over_http(database_url, repeats)
    return figures


def events(sessions: Any, job_id: str) -> None:
    from overlay.store import jobs as job_store

    with sessions.begin() as s:
        assert job_store.events(s, job_id)


def store_page(sessions: Any, state: JobState) -> None:
    from overlay.store import jobs as job_store

    with sessions.begin() as s:
        job_store.list_jobs(s, state=state, limit=50, offset=0)


def store_counters(sessions: Any) -> None:
    from overlay.store import stats

    with sessions.begin() as s:
        stats.counters(s)
        stats.oldest_queued_at(s)


def over_http(database_url: str, repeats: int) -> float:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "API_BIND": f"127.0.0.1:{port}", "API_WORKERS": "1",
           "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py",
                             "web.app:create_app()"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        session = requests.Session()
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:
            try:
                if session.get(url, timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer /metrics within 60 s")
            time.sleep(0.3)
        return median_ms(lambda: session.get(url, timeout=10).raise_for_status(), repeats)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    from datetime import UTC, datetime, timedelta

    from overlay.store.session import ensure_database, make_engine, migrate
    from tests.conftest import PG_SERVER, drop_database

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--events-per-job", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is printed)")
    parser.add_argument("--database", help="a database --keep kept: measure it again, load nothing")
    args = parser.parse_args()
    if args.database:
        migrate(args.database)  # the code measured may have added migrations since it was kept
        return report(measure_loaded(args.database, args.repeats))
    url = f"{PG_SERVER}/overlay_history_{uuid.uuid4().hex[:8]}"
    ensure_database(url)
    try:
        migrate(url)
        engine = make_engine(url)
        began = time.perf_counter()
        with engine.begin() as conn:
            load(conn, jobs=args.jobs, events_per_job=args.events_per_job,
                 start=datetime.now(UTC) - timedelta(days=30))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs, job_events"))
        engine.dispose()
        figures = {"load_s": round(time.perf_counter() - began, 1), **measure_loaded(url, args.repeats)}
    finally:
        if args.keep:
            print(f"kept: {url}")
        else:
            drop_database(url)
    return report(figures)


def measure_loaded(url: str, repeats: int) -> dict[str, Any]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        n_jobs, n_events = (conn.scalar(text(f"select count(*) from {table}"))
                            for table in ("jobs", "job_events"))
    engine.dispose()
    return {"jobs": n_jobs, "events": n_events, **measure(url, repeats, job_id=f"hist-{n_jobs // 2 + 1}"),
            "repeats": repeats, **old_queries_ms(url)}


def report(figures: dict[str, Any]) -> int:
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
