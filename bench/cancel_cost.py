"""What running jobs cost Postgres: statements per second while N jobs run on two agents.

    python -m bench.cancel_cost --jobs 200 [--executor subprocess|fake] [--code DIR] [--window 30]

Before issue 12 every running job's thread asked Postgres every 0.5 s whether it had
been cancelled (2 queries/s a job); now a cancel is a message to the node and the
agent's per-heartbeat check confirms it (a few statements per agent per beat, whatever
the number of jobs). This starts a stack of its own (database and redis-server of its
own; two agents with enough slots; heartbeat and reconcile at the deployment defaults),
runs ``--jobs`` ``sleep 600`` jobs, waits until all are RUNNING, and counts Postgres
transactions on the database over ``--window`` seconds (``pg_stat_database``'s
``xact_commit + xact_rollback``: pg_stat_statements is not installed here; each of
these transactions carries one to a few statements). Then it cancels every job and
checks that every job process is gone.

``--code DIR`` runs the stack from another checkout (``git worktree add /tmp/old
<commit>``), its own migrations included, to measure the code before a change.
``--executor fake`` runs no process per job (the agent's fake executor sleeps in its
thread), which lets one machine hold 1,000 jobs; the old code polled there too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from overlay.store.session import ensure_database
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import ROOT, PrivateRedis, Stack, wait_until

RESULTS = Path(__file__).resolve().parent / "results" / "cancel_cost.json"


class CodeStack(Stack):
    """A Stack whose processes run the code of another checkout."""

    def __init__(self, code: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.code = code
        self.env["PYTHONPATH"] = str(code)

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, cwd=self.code, env={**self.env, **env}, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc


def migrate_with(code: Path, database_url: str) -> None:
    code_line = f"from overlay.store.session import migrate; migrate({database_url!r})"
    subprocess.run([sys.executable, "-c", code_line], cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
                   check=True, capture_output=True)


def transactions(engine: Any, database: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select xact_commit + xact_rollback from pg_stat_database "
                                     "where datname = :d"), {"d": database}).scalar_one())


def count(engine: Any, state: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(text("select count(*) from jobs where status = :s"), {"s": state})
        return int(found.scalar_one())


def job_processes(prefix: str) -> int:
    """Processes whose environment says they are one of this run's jobs."""
    mark = f"OVERLAY_JOB_ID={prefix}".encode()
    found = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if mark in Path(entry.path, "environ").read_bytes():
                    found += 1
            except OSError:
                pass
    return found


def run(jobs: int, executor: str, code: Path, window: float) -> dict[str, Any]:
    database = f"overlay_cost_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    database_url = f"{PG_SERVER}/{database}"
    ensure_database(database_url)
    migrate_with(code, database_url)
    workdir = Path(tempfile.mkdtemp(prefix="overlay-cost-"))
    redis = PrivateRedis(workdir)
    redis.start()
    slots = jobs // 2 + 2
    stack = CodeStack(code, database_url=database_url, redis_url=redis.url, workdir=workdir,
                      HEARTBEAT_INTERVAL_S="5", RECONCILE_INTERVAL_S="3", NODE_TTL_S="15", FENCE_S="10",
                      EXECUTOR=executor)
    engine = create_engine(database_url)
    prefix = f"cost{uuid.uuid4().hex[:4]}-"
    try:
        stack.start_cluster(concurrency=slots)
        session = requests.Session()
        for i in range(jobs):
            session.post(f"{stack.api}/api/jobs", json={"job_id": f"{prefix}{i}", "cmd": ["sleep", "600"]},
                         timeout=30).raise_for_status()
        started = time.monotonic()
        wait_until(lambda: count(engine, "RUNNING") == jobs, timeout=600, what=f"{jobs} jobs RUNNING",
                   every=1)
        ramp_s = time.monotonic() - started
        time.sleep(5)  # let the start-up burst pass
        before, t0 = transactions(engine, database), time.monotonic()
        time.sleep(window)
        after, t1 = transactions(engine, database), time.monotonic()
        for i in range(jobs):
            session.post(f"{stack.api}/api/jobs/{prefix}{i}/cancel", timeout=30)
        cancelled_at = time.monotonic()
        if executor == "subprocess":
            wait_until(lambda: job_processes(prefix) == 0, timeout=300, what="every job process to be gone",
                       every=1)
        gone_s = time.monotonic() - cancelled_at
        return {"jobs": jobs, "executor": executor, "code": str(code), "window_s": round(t1 - t0, 1),
                "transactions_per_s": round((after - before) / (t1 - t0), 1),
                "seconds_to_all_running": round(ramp_s, 1),
                "seconds_from_cancels_to_no_job_process": round(gone_s, 1)}
    finally:
        stack.stop_all()
        redis.kill()
        engine.dispose()
        drop_database(database_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--executor", choices=("subprocess", "fake"), default="subprocess")
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--label", default="")
    args = parser.parse_args(argv)
    figures = {"label": args.label, **run(args.jobs, args.executor, args.code.resolve(), args.window)}
    print(json.dumps(figures, indent=2))
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*results, figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
