"""`make bench`: overlay measured side by side with the raw-Celery floor, in one run.

Starts its own local stack (gunicorn API, scheduler, beat, two agents with fake GPUs)
on the local Postgres (a database of its own) and Redis (DB 13), runs every
measurement, writes bench/results/latest.json and latest.md, and prints the table.

    python -m bench.run            # the full counts, 3 side-by-side runs, medians (about 3 minutes)
    python -m bench.run --quick    # smaller counts, one run (about 20 seconds)

Each run measures the Celery floor and then overlay, one after the other, so their
ratios compare like with like on a noisy machine; every figure is the median over runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench import placement
from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import BIN, ROOT, Stack, wait_until

REDIS_URL = "redis://127.0.0.1:6379/13"
RESULTS = ROOT / "bench" / "results"
FULL = {"floor_seq": 300, "floor_burst": 1000, "e2e_seq": 300, "e2e_burst": 2000, "submits": 5000}
QUICK = {"floor_seq": 60, "floor_burst": 200, "e2e_seq": 60, "e2e_burst": 300, "submits": 600}
CLIENTS = 32


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


def measure_floor(counts: dict[str, int], workdir: Path) -> dict[str, float]:
    """Round trips and burst throughput of the plain Celery task."""
    import redis

    from bench.floor import run_true

    redis.Redis.from_url(REDIS_URL).flushdb()
    with open(workdir / "floor.log", "wb") as out:
        worker = subprocess.Popen(
            [str(BIN / "celery"), "-A", "bench.floor", "worker", "-Q", "floor", "-P", "threads",
             "-c", "8", "--loglevel", "WARNING"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            env={"FLOOR_REDIS_URL": REDIS_URL, "PATH": str(BIN) + ":/usr/bin:/bin"},
        )
    try:
        run_true.delay().get(timeout=30)  # warm
        rtts = []
        for _ in range(counts["floor_seq"]):
            t0 = time.perf_counter()
            run_true.delay().get(timeout=30)
            rtts.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        results = [run_true.delay() for _ in range(counts["floor_burst"])]
        for r in results:
            r.get(timeout=120)
        burst_s = time.perf_counter() - t0
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return {"floor_p50_ms": statistics.median(rtts), "floor_p95_ms": pct(rtts, 0.95),
            "floor_jobs_per_s": counts["floor_burst"] / burst_s}


def submit_and_wait(http: requests.Session, api: str) -> dict[str, Any]:
    job = http.post(f"{api}/api/jobs", json={"cmd": ["true"]}, timeout=30).json()
    while job["state"] not in ("DONE", "FAILED", "CANCELLED"):
        job = http.get(f"{api}/api/jobs/{job['job_id']}", params={"wait": 30}, timeout=60).json()
    return job


def server_ms(job: dict[str, Any]) -> float:
    t = job["timestamps"]
    elapsed = datetime.fromisoformat(t["finished"]) - datetime.fromisoformat(t["enqueued"])
    return elapsed.total_seconds() * 1000


def measure_e2e(api: str, count: int) -> dict[str, float]:
    """Sequential trivial jobs: POST until the client sees DONE, and server-side time."""
    http = requests.Session()
    submit_and_wait(http, api)  # warm
    client, server = [], []
    for _ in range(count):
        t0 = time.perf_counter()
        job = submit_and_wait(http, api)
        client.append((time.perf_counter() - t0) * 1000)
        assert job["state"] == "DONE", job
        server.append(server_ms(job))
    return {"e2e_p50_ms": statistics.median(client), "e2e_p95_ms": pct(client, 0.95),
            "e2e_server_p50_ms": statistics.median(server), "e2e_server_p95_ms": pct(server, 0.95)}


def in_parallel(count: int, work: Callable[[requests.Session], Any],
                clients: int = CLIENTS) -> tuple[list[Any], float]:
    """Run ``work`` ``count`` times over ``clients`` threads, each with its own session
    (a requests.Session is not to be shared between threads)."""
    local = threading.local()

    def call(_: int) -> Any:
        if not hasattr(local, "http"):
            local.http = requests.Session()
        return work(local.http)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(call, range(count)))
    return results, time.perf_counter() - t0


def measure_throughput(api: str, count: int) -> dict[str, float]:
    jobs, elapsed = in_parallel(count, lambda http: submit_and_wait(http, api))
    done = sum(j["state"] == "DONE" for j in jobs)
    assert done == count, f"{count - done} of {count} jobs did not end DONE"
    return {"e2e_jobs_per_s": count / elapsed}


def measure_submit(api: str, count: int) -> dict[str, float]:
    def post(http: requests.Session) -> float:
        t0 = time.perf_counter()
        response = http.post(f"{api}/api/jobs", json={"cmd": ["true"]}, timeout=30)
        assert response.status_code == 201, response.text
        return (time.perf_counter() - t0) * 1000

    latencies, elapsed = in_parallel(count, post)
    return {"submit_jobs_per_s": count / elapsed, "submit_p50_ms": statistics.median(latencies),
            "submit_p95_ms": pct(latencies, 0.95)}


def start_stack(database_url: str, workdir: Path) -> Stack:
    stack = Stack(database_url=database_url, redis_url=REDIS_URL, workdir=workdir,
                  HEARTBEAT_INTERVAL_S="5", RECONCILE_INTERVAL_S="3", NODE_TTL_S="15")
    stack.start_api()
    stack.start_scheduler()
    stack.start_agent("node-a")
    stack.start_agent("node-b")
    stack.start_beat()
    wait_until(lambda: len(requests.get(f"{stack.api}/api/nodes", timeout=5).json()["nodes"]) == 2,
               timeout=30, what="both agents")
    return stack


def run_once(counts: dict[str, int]) -> dict[str, float]:
    """The floor, then overlay's stack, side by side; the ratios of this run."""
    workdir = Path(tempfile.mkdtemp(prefix="overlay-bench-"))
    log(f"floor: {counts['floor_seq']} sequential, burst of {counts['floor_burst']}")
    results = measure_floor(counts, workdir)
    database_url = f"{PG_SERVER}/overlay_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    stack = start_stack(database_url, workdir)
    try:
        log(f"overlay end to end: {counts['e2e_seq']} sequential jobs")
        results.update(measure_e2e(stack.api, counts["e2e_seq"]))
        log(f"overlay throughput: {counts['e2e_burst']} jobs from {CLIENTS} clients")
        results.update(measure_throughput(stack.api, counts["e2e_burst"]))
        stack.kill("scheduler")  # the submit API alone: nothing runs the jobs
        log(f"submit API alone: {counts['submits']} POSTs from {CLIENTS} clients")
        results.update(measure_submit(stack.api, counts["submits"]))
    finally:
        stack.stop_all()
        drop_database(database_url)
    results["latency_ratio"] = results["e2e_p50_ms"] / results["floor_p50_ms"]
    results["throughput_ratio"] = results["e2e_jobs_per_s"] / results["floor_jobs_per_s"]
    return results


def run(quick: bool, repeats: int) -> dict[str, Any]:
    """``repeats`` side-by-side runs; each figure is the median over them (runs are kept)."""
    counts = QUICK if quick else FULL
    runs = []
    for i in range(repeats):
        log(f"run {i + 1} of {repeats}")
        runs.append(run_once(counts))
    results: dict[str, Any] = {"quick": quick, "counts": counts, "repeats": repeats}
    results.update({key: statistics.median(r[key] for r in runs) for key in runs[0]})
    results["runs"] = runs
    log("placement and a 10,000-job pass")
    results.update(placement.run(quick))
    return results


def table(r: dict[str, Any]) -> str:
    rows = [
        ("floor round trip p50 / p95", f"{r['floor_p50_ms']:.1f} / {r['floor_p95_ms']:.1f} ms"),
        ("floor burst throughput", f"{r['floor_jobs_per_s']:.0f} jobs/s"),
        ("overlay end to end p50 / p95 (client)", f"{r['e2e_p50_ms']:.1f} / {r['e2e_p95_ms']:.1f} ms"),
        ("overlay enqueued -> finished p50 / p95 (server)",
         f"{r['e2e_server_p50_ms']:.1f} / {r['e2e_server_p95_ms']:.1f} ms"),
        ("overlay throughput, 32 clients", f"{r['e2e_jobs_per_s']:.0f} jobs/s"),
        ("submit API, 32 clients", f"{r['submit_jobs_per_s']:.0f} jobs/s "
                                   f"(p50 {r['submit_p50_ms']:.1f} ms, p95 {r['submit_p95_ms']:.1f} ms)"),
        ("latency ratio (e2e p50 / floor p50)", f"{r['latency_ratio']:.2f}x"),
        ("throughput ratio (e2e / floor)", f"{r['throughput_ratio']:.2f}"),
        ("scheduling pass, 10,000 jobs on 1,000 nodes", f"{r['pass_10k_ms']:.1f} ms"),
    ]
    for policy, by_nodes in r["placement_median_us"].items():
        cells = ", ".join(f"{n}: {us:.1f}" for n, us in by_nodes.items())
        rows.append((f"placement {policy}, median us by nodes", cells))
    title = f"median of {r['repeats']} side-by-side run(s)" if r.get("repeats", 1) > 1 else "one run"
    lines = [f"| measurement ({title}) | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, one run: about 20 seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help="side-by-side runs to take medians over (default 3, 1 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = run(args.quick, args.repeats or (1 if args.quick else 3))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "latest.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
