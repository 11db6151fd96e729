"""Where an end-to-end job's milliseconds go: stage times and py-spy profiles of every process.

Starts the same local stack as ``make bench``, runs sequential trivial jobs while py-spy
samples the API's gunicorn workers, the scheduler and both agents, then prints

- the stage breakdown from each job's own timestamps (medians): POST answered,
  enqueued -> placed (scheduling message + pass), placed -> started (run_job message +
  claim), started -> finished (the subprocess and recording its end), finished -> client
  saw DONE (NOTIFY + the long-poll's answer);
- per process, the functions holding the most on-CPU samples (own and with callees).

    python -m bench.profile [--jobs 200] [--clients 1] [--rate 500] [--out bench/results/profile]

py-spy (in the dev extras, so ``make install`` has it) must be allowed to attach: root,
or ptrace permitted. The raw collapsed stacks are kept under --out for flame graphs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench.run import in_parallel, start_stack
from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import BIN, ROOT

PROCESSES = ("api", "scheduler", "node-a", "node-b")
STAGES = ("post", "enqueued->placed", "placed->started", "started->finished", "finished->seen", "total")


def ms(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds() * 1000


def one_job(http: requests.Session, api: str) -> dict[str, float]:
    """Run one trivial job; its stage times in ms (the client's and the server's clocks are
    this machine's). The POST overlaps enqueued -> placed: the job is enqueued inside it."""
    t0 = time.perf_counter()
    job = http.post(f"{api}/api/jobs", json={"cmd": ["true"]}, timeout=30).json()
    posted = time.perf_counter()
    while job["state"] not in ("DONE", "FAILED", "CANCELLED"):
        job = http.get(f"{api}/api/jobs/{job['job_id']}", params={"wait": 30}, timeout=60).json()
    seen = time.perf_counter()
    seen_at = datetime.now(UTC)
    t = job["timestamps"]
    return {
        "post": (posted - t0) * 1000,
        "enqueued->placed": ms(t["enqueued"], t["placed"]),
        "placed->started": ms(t["placed"], t["started"]),
        "started->finished": ms(t["started"], t["finished"]),
        # the client runs on the API's host: one clock
        "finished->seen": (seen_at - datetime.fromisoformat(t["finished"])).total_seconds() * 1000,
        "total": (seen - t0) * 1000,
    }


def spy(pid: int, out: Path, seconds: int, rate: int) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` and its children, sampling only the thread holding the GIL: what
    the process spends its CPU on, not where its idle threads wait."""
    return subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--subprocesses", "--gil", "--format", "raw",
         "--rate", str(rate), "--duration", str(seconds), "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


SUPERVISOR = "[a job's supervisor process: workers.supervisor, or its launcher]"


def frame_name(frame: str) -> str:
    """``function (file)`` for a Python frame; for a child process (py-spy --subprocesses
    names it ``process PID:"cmd"``), one name for every job's supervisor and none for others."""
    if frame.startswith("process "):
        # A supervisor forked by the launcher keeps the launcher's command line.
        return SUPERVISOR if "workers.supervisor" in frame or "workers.launcher" in frame else ""
    return frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"


def top_functions(collapsed: Path, n: int) -> tuple[int, list[tuple[str, int, int]]]:
    """(samples, [(function, own samples, samples with callees)]) from py-spy's raw output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")[1:] if f]  # the first is the process
        frames = [f for f in frames if f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    rows = [(f, own[f], total[f]) for f, _ in own.most_common(n)]
    return samples, rows


def run(jobs: int, out: Path, rate: int, clients: int) -> tuple[dict[str, float], float]:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="overlay-profile-"))
    database_url = f"{PG_SERVER}/overlay_profile_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    stack = start_stack(database_url, workdir)
    try:
        http = requests.Session()
        for _ in range(20):  # warm every connection pool and import
            one_job(http, stack.api)
        seconds = max(10, jobs // 20)
        spies = {name: spy(stack.procs[name].pid, out / f"{name}.txt", seconds, rate)
                 for name in PROCESSES if rate}
        time.sleep(1.0 if rate else 0)  # py-spy attached
        times, elapsed = in_parallel(jobs, lambda session: one_job(session, stack.api), clients)
        rate_per_s = jobs / elapsed
        for name, proc in spies.items():
            _, err = proc.communicate(timeout=seconds + 60)
            if proc.returncode != 0 or not (out / f"{name}.txt").exists():
                raise SystemExit(f"py-spy failed on {name}: {err.decode(errors='replace')[-500:]}")
    finally:
        stack.stop_all()
        drop_database(database_url)
    return {stage: statistics.median(t[stage] for t in times) for stage in STAGES}, rate_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=int, default=500,
                        help="py-spy samples per second (0: stage times only, undisturbed)")
    parser.add_argument("--clients", type=int, default=1, help="jobs submitted at once (1: sequential)")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile")
    args = parser.parse_args()
    stages, per_s = run(args.jobs, args.out, args.rate, args.clients)
    print(f"stage medians over {args.jobs} jobs from {args.clients} client(s), {per_s:.0f} jobs/s (ms):")
    for stage, value in stages.items():
        print(f"  {stage:<20} {value:7.2f}")
    for name in PROCESSES if args.rate else ():
        samples, rows = top_functions(args.out / f"{name}.txt", args.top)
        print(f"\n{name}: {samples} on-CPU samples at {args.rate}/s; own / with callees")
        for function, own, total in rows:
            print(f"  {own / samples:6.1%} {total / samples:6.1%}  {function}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
