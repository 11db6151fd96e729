"""Long-polls against submits: a stream of submits, alone and then with 500 clients waiting.

    python -m bench.long_polls [--waiters 500] [--submits 300] [--rate 20] [--threads 320 --reserved 16]

Starts the API as deployed (gunicorn, deploy/gunicorn.conf.py, 2 gthread workers) against a
database of its own and a redis-server of its own, with no scheduler: a job stays QUEUED,
so its waiters wait. In one run: ``--submits`` POSTs at ``--rate`` per second with nobody
waiting; then ``--waiters`` clients long-poll one job (``?wait=120``, asked again when it
runs out, and a 429 asked again after its Retry-After, as the CLI does) and the same stream
of submits runs again; then the
job is cancelled and every waiter must get it, CANCELLED, and the stream runs a third time
with nobody waiting (how much the machine's load drifted). Prints p50/p95/max submit latency
of both phases side by side, how many long-polls were refused with 429, and how long the
waiters took to get the end; writes bench/results/long_polls.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import PrivateRedis, Stack, submit

RESULTS = Path(__file__).resolve().parent / "results" / "long_polls.json"
# The longest ?wait= the API takes; a waiter whose wait runs out asks again.
WAIT_S = 120


def submit_stream(api: str, n: int, rate: float) -> list[float]:
    """``n`` POSTs, one every 1/rate s (a late one is sent at once); each one's seconds."""
    session = requests.Session()
    latencies = []
    began = time.perf_counter()
    for i in range(n):
        time.sleep(max(0.0, began + i / rate - time.perf_counter()))
        t = time.perf_counter()
        response = session.post(f"{api}/api/jobs", json={"cmd": ["true"]}, timeout=120)
        latencies.append(time.perf_counter() - t)
        assert response.status_code == 201, response.text
    return latencies


class Waiters:
    """``n`` clients, each long-polling ``job_id`` until it answers (a 429 is asked again)."""

    def __init__(self, api: str, job_id: str, n: int) -> None:
        self.url = f"{api}/api/jobs/{job_id}"
        self.states: list[str] = []
        self.refused = 0
        self.sent = 0
        self.answered_at: list[float] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.wait, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def wait(self) -> None:
        session = requests.Session()
        while True:
            with self.lock:
                self.sent += 1
            response = session.get(self.url, params={"wait": WAIT_S}, timeout=WAIT_S + 60)
            if response.status_code == 429:
                with self.lock:
                    self.refused += 1
                session.close()  # as the CLI does: a new connection may reach the other worker
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            state = response.json()["state"]
            if state not in ("DONE", "FAILED", "CANCELLED"):
                continue  # its wait ran out first: ask again, as the CLI does
            with self.lock:
                self.states.append(state)
                self.answered_at.append(time.perf_counter())
            return


def summary(latencies: list[float]) -> dict[str, float]:
    ms = sorted(1000 * x for x in latencies)
    return {"p50": round(statistics.median(ms), 1), "p95": round(ms[int(0.95 * (len(ms) - 1))], 1),
            "max": round(ms[-1], 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    database_url = f"{PG_SERVER}/overlay_polls_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    ensure_database(database_url)
    migrate(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="overlay-polls-"))
    redis = PrivateRedis(workdir)
    redis.start()
    stack = Stack(database_url=database_url, redis_url=redis.url, workdir=workdir,
                  API_THREADS=str(args.threads), API_RESERVED_THREADS=str(args.reserved), LOG_LEVEL="WARNING")
    try:
        stack.start_api()
        submit_stream(stack.api, 20, args.rate)  # warm both workers' pools
        alone = submit_stream(stack.api, args.submits, args.rate)
        job_id = submit(stack, cmd=["true"])["job_id"]
        waiters = Waiters(stack.api, job_id, args.waiters)
        while waiters.sent < args.waiters:
            time.sleep(0.1)
        time.sleep(args.settle)  # every waiter's request has reached a thread (or been refused)
        waiting = submit_stream(stack.api, args.submits, args.rate)
        refused_while_waiting = waiters.refused
        cancelled_at = time.perf_counter()
        requests.post(f"{stack.api}/api/jobs/{job_id}/cancel", timeout=60).raise_for_status()
        for t in waiters.threads:
            t.join(120)
        after = submit_stream(stack.api, args.submits, args.rate)  # nobody waiting again: the load's drift
        return {
            "waiters": args.waiters, "submits_per_phase": args.submits, "rate_per_s": args.rate,
            "api_workers": 2, "api_threads": args.threads, "api_reserved_threads": args.reserved,
            "submit_ms_no_waiters": summary(alone), "submit_ms_with_waiters": summary(waiting),
            "submit_ms_no_waiters_after": summary(after),
            "p95_delay_ms": round(summary(waiting)["p95"] - summary(alone)["p95"], 1),
            "long_polls_refused_429": refused_while_waiting,
            "waiters_answered": len(waiters.states),
            "waiters_answered_cancelled": waiters.states.count("CANCELLED"),
            "last_waiter_answered_after_cancel_ms": round(1000 * (max(waiters.answered_at) - cancelled_at), 1)
            if waiters.answered_at else None,
        }
    finally:
        stack.stop_all()
        redis.kill()
        drop_database(database_url)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--submits", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=320, help="API_THREADS per worker")
    parser.add_argument("--reserved", type=int, default=16, help="API_RESERVED_THREADS per worker")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds between the last waiter and the submits")
    result = run(parser.parse_args())
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["waiters_answered_cancelled"] == result["waiters"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
