"""Bulk submit: how fast the API accepts a job array's tasks.

    python -m bench.arrays [--api URL] [--tasks 10000] [--repeats 5]

Each repeat POSTs one array of ``--tasks`` one-GPU tasks (``0-N%50``) to /api/jobs and
times the request to its 201 (the array and its tasks stored in one transaction). Prints
the median and the spread, and tasks accepted per second at the median; writes them to
bench/results/arrays.json. Given ``--api``, it submits to that running API (its queue grows
by repeats x tasks; nothing is cancelled); without it, it starts a gunicorn API of its own
(tests/integration/harness.py) on a database and a redis-server of its own, and drops them
afterwards. No scheduler or agent runs: this measures acceptance, not placement.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

RESULTS = Path(__file__).resolve().parent / "results" / "arrays.json"


def submit_arrays(api: str, tasks: int, repeats: int) -> list[float]:
    """Seconds from sending each array to its 201."""
    session = requests.Session()
    seconds = []
    for _ in range(repeats):
        body = {"job_id": f"bench-{uuid.uuid4().hex[:8]}", "cmd": ["python", "sweep.py"], "gpus": 1,
                "array": f"0-{tasks - 1}%50"}
        began = time.perf_counter()
        response = session.post(f"{api}/api/jobs", json=body, timeout=120)
        seconds.append(time.perf_counter() - began)
        if response.status_code != 201 or response.json().get("size") != tasks:
            raise SystemExit(f"array not accepted: {response.status_code} {response.text[:300]}")
    return seconds


def figures(tasks: int, seconds: list[float]) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {"tasks_per_array": tasks, "repeats": len(seconds), "seconds_median": round(median, 3),
            "seconds_min": round(min(seconds), 3), "seconds_max": round(max(seconds), 3),
            "tasks_per_second_median": round(tasks / median)}


def with_own_api(tasks: int, repeats: int) -> list[float]:
    from overlay.store.session import ensure_database, migrate
    from tests.conftest import PG_SERVER, drop_database
    from tests.integration.harness import PrivateRedis, Stack

    database_url = f"{PG_SERVER}/overlay_arrays_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    ensure_database(database_url)
    migrate(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="overlay-arrays-"))
    redis = PrivateRedis(workdir)
    redis.start()
    stack = Stack(database_url=database_url, redis_url=redis.url, workdir=workdir)
    try:
        stack.start_api()
        submit_arrays(stack.api, 100, 1)  # warm: connections, compiled statements
        return submit_arrays(stack.api, tasks, repeats)
    finally:
        stack.stop_all()
        redis.kill()
        drop_database(database_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", help="a running API's address (default: start one of its own)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seconds = (submit_arrays(args.api.rstrip("/"), args.tasks, args.repeats) if args.api
               else with_own_api(args.tasks, args.repeats))
    result = figures(args.tasks, seconds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
