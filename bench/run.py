"""`make bench`: overlay measured side by side with the raw-Celery floor, in one run.

Starts its own local stack (gunicorn API, scheduler, beat, two agents with fake GPUs)
on the local Postgres (a database of its own) and Redis (DB 13, or BENCH_REDIS_URL),
runs every measurement, prints every figure of issue 17 with its target and whether it
is met, and keeps the run: bench/results/bench-<time>-<commit>.json (with the machine's
core count, load and the git commit), and latest.json / latest.md.

    python -m bench.run            # the full counts, 3 side-by-side runs, medians (minutes)
    python -m bench.run --quick    # smaller counts, one run

Each run measures the Celery floor and then overlay, one after the other, so their
ratios compare like with like on a noisy machine; every figure is the median over runs.
Overlay's stack runs whole for every figure, the submit API's included, as a user's
cluster runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from bench import placement
from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import BIN, ROOT, Stack, wait_until

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
RESULTS = ROOT / "bench" / "results"
FULL = {"floor_seq": 300, "floor_burst": 1000, "e2e_seq": 300, "e2e_burst": 2000, "submits": 5000,
        "turnover": 600, "array": 10_000, "pass_jobs": 10_000, "pass_nodes": 1_000}
QUICK = {"floor_seq": 60, "floor_burst": 200, "e2e_seq": 60, "e2e_burst": 300, "submits": 600,
         "turnover": 120, "array": 2_000, "pass_jobs": 10_000, "pass_nodes": 1_000}
CLIENTS = 32
ENDED = ("DONE", "FAILED", "CANCELLED")


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
        # The burst comes from as many client threads as overlay's throughput run.
        with ThreadPoolExecutor(CLIENTS) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda _: run_true.delay().get(timeout=120), range(counts["floor_burst"])))
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


def measure_arrays(api: str, size: int, repeats: int = 3) -> dict[str, Any]:
    """``repeats`` arrays of ``size`` tasks through bench/arrays.py (``POST /api/jobs`` with an
    ``array``), one after another: tasks accepted per second of the median POST (one request
    alone would be a gunicorn worker's first array, or the moment a pass ran beside it); not
    measured where arrays are not built."""
    try:
        from bench import arrays
    except ImportError:
        return {"array_not_measured": "arrays not built"}
    seconds = arrays.submit_arrays(api, size, repeats)
    return {"array_tasks_per_s": size / statistics.median(seconds)}


def process_tree(roots: list[int]) -> list[int]:
    """``roots`` and every process descended from them, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: list[int]) -> float:
    """CPU seconds spent so far by the trees under ``roots``: each live process's utime +
    stime, plus cutime + cstime (its children that have ended and been waited for: a
    job's supervisor, and the job itself, count when they end)."""
    ticks = 0
    for pid in process_tree(roots):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended since the walk: its time is in its parent's cutime
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each of the stack's processes (with their descendants)."""
    return {name: cpu_seconds([p.pid]) for name, p in stack.procs.items() if p.poll() is None}


def measure_turnover(stack: Stack, database_url: str, count: int) -> dict[str, float]:
    """``count`` one-GPU `true` jobs at once over the fleet's 6 GPUs: from one job's end
    on a GPU to the next job's start on that GPU, by the job events (Postgres's clock);
    only where the next job was already queued when the GPU came free."""
    prefix = f"turn-{uuid.uuid4().hex[:6]}-"
    ids = iter(range(count))
    lock = threading.Lock()

    def post(http: requests.Session) -> None:
        with lock:
            n = next(ids)
        body = {"job_id": f"{prefix}{n:05d}", "cmd": ["true"], "gpus": 1}
        response = http.post(f"{stack.api}/api/jobs", json=body, timeout=60)
        assert response.status_code == 201, response.text

    in_parallel(count, post)
    engine = create_engine(database_url)
    try:
        def ended() -> bool:
            with engine.connect() as conn:
                return conn.scalar(text("select count(*) from jobs where job_id like :p and status in "
                                        "('DONE', 'FAILED', 'CANCELLED')"), {"p": prefix + "%"}) == count
        wait_until(ended, timeout=max(120, count), what=f"{count} one-GPU jobs", every=0.5)
        with engine.connect() as conn:
            events = conn.execute(text(
                "select e.job_id, e.to_state, e.at, e.node, e.gpu_indices, j.enqueued_at from job_events e "
                "join jobs j using (job_id) where e.job_id like :p "
                "and e.to_state in ('PLACED', 'RUNNING', 'DONE') order by e.at"), {"p": prefix + "%"}).all()
    finally:
        engine.dispose()
    gaps = turnover_gaps(events)
    assert gaps.total, f"no GPU came free with a job waiting: {count} jobs are too few"
    return {"turnover_p50_ms": statistics.median(gaps.total), "turnover_p95_ms": pct(gaps.total, 0.95),
            "turnover_gaps": len(gaps.total), "true_run_p50_ms": statistics.median(gaps.runs),
            "turnover_to_placed_p50_ms": statistics.median(gaps.to_placed),
            "turnover_placed_to_running_p50_ms": statistics.median(gaps.to_running)}


@dataclass
class Gaps:
    """Turnover gaps in ms: a job's DONE to the next RUNNING on the same GPU (``total``), split
    at the next job's PLACED (the pass's clock as it began: ``to_placed`` is the wait for a
    pass and its first reads, ``to_running`` the rest of it, its send and the agent's
    start); and each job's own RUNNING to DONE (``runs``)."""

    total: list[float] = field(default_factory=list)
    to_placed: list[float] = field(default_factory=list)
    to_running: list[float] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)


def turnover_gaps(events: list[Any]) -> Gaps:
    """The gaps where the next job was enqueued before the GPU came free."""
    by_gpu: dict[tuple[str, int], list[Any]] = {}
    started: dict[str, datetime] = {}
    placed: dict[str, datetime] = {}
    gaps = Gaps()
    for e in events:
        if e.to_state == "PLACED":
            placed[e.job_id] = e.at
            continue
        for gpu in e.gpu_indices:
            by_gpu.setdefault((e.node, gpu), []).append(e)
        if e.to_state == "RUNNING":
            started[e.job_id] = e.at
        elif e.job_id in started:
            gaps.runs.append(ms(e.at - started[e.job_id]))
    for timeline in by_gpu.values():
        for prev, nxt in itertools.pairwise(timeline):
            if prev.to_state == "DONE" and nxt.to_state == "RUNNING" and nxt.enqueued_at <= prev.at:
                gaps.total.append(ms(nxt.at - prev.at))
                if nxt.job_id in placed:
                    gaps.to_placed.append(ms(placed[nxt.job_id] - prev.at))
                    gaps.to_running.append(ms(nxt.at - placed[nxt.job_id]))
    return gaps


def ms(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def start_stack(database_url: str, workdir: Path, **env: str) -> Stack:
    stack = Stack(database_url=database_url, redis_url=REDIS_URL, workdir=workdir,
                  HEARTBEAT_INTERVAL_S="5", RECONCILE_INTERVAL_S="3", NODE_TTL_S="15", **env)
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
        cpu_before = stack_cpu(stack)
        results.update(measure_throughput(stack.api, counts["e2e_burst"]))
        cpu = {name: (seconds - cpu_before[name]) * 1000 / counts["e2e_burst"]
               for name, seconds in stack_cpu(stack).items()}
        results["cpu_ms_per_job"] = sum(cpu.values())
        results.update({f"cpu_ms_per_job_{name}": ms for name, ms in cpu.items()})
        log(f"GPU turnover: {counts['turnover']} one-GPU jobs over 6 GPUs")
        results.update(measure_turnover(stack, database_url, counts["turnover"]))
        log(f"submit API, the stack running: {counts['submits']} POSTs from {CLIENTS} clients")
        results.update(measure_submit(stack.api, counts["submits"]))
        log(f"3 arrays of {counts['array']} tasks, one after another")
        results.update(measure_arrays(stack.api, counts["array"]))
    finally:
        stack.stop_all()
        drop_database(database_url)
    results["latency_ratio"] = results["e2e_p50_ms"] / results["floor_p50_ms"]
    results["throughput_ratio"] = results["e2e_jobs_per_s"] / results["floor_jobs_per_s"]
    results["turnover_ratio"] = results["turnover_p50_ms"] / results["floor_p50_ms"]
    return results


def run(quick: bool, repeats: int) -> dict[str, Any]:
    """``repeats`` side-by-side runs; each figure is the median over them (runs are kept)."""
    counts = QUICK if quick else FULL
    runs = []
    for i in range(repeats):
        log(f"run {i + 1} of {repeats}")
        runs.append(run_once(counts))
    results: dict[str, Any] = {"quick": quick, "counts": counts, "repeats": repeats}
    results.update({key: statistics.median(r[key] for r in runs) for key in runs[0]
                    if not isinstance(runs[0][key], str)})
    results.update({key: value for key, value in runs[0].items() if isinstance(value, str)})
    results["runs"] = runs
    log("placement, and a 10,000-job pass in memory and with Postgres")
    results.update(placement.run(quick, server=PG_SERVER, redis_url=REDIS_URL,
                                 db_size=(counts["pass_nodes"], counts["pass_jobs"])))
    return results


def machine() -> dict[str, Any]:
    """Where and on what the figures were measured."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "load_average": os.getloadavg(), "commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def measure_in(tree: Path, script: Path, function: str, *args: Any) -> dict[str, float]:
    """``function(*args)`` of the benchmark ``script`` (a file of this checkout's bench/), in a
    fresh interpreter on ``tree``'s code (another checkout, for a side-by-side): its JSON
    answer. A tree older than the script runs this checkout's copy of it on its own code."""
    call = f"{function}(*{json.dumps(list(args))})"
    line = f"import json; from bench.{script.stem} import {function}; print(json.dumps({call}))"
    if not (tree / "bench" / script.name).exists():
        line = (f"import json, runpy; {function} = runpy.run_path({str(script)!r})[{function!r}]; "
                f"print(json.dumps({call}))")
    out = subprocess.run([sys.executable, "-c", line], cwd=tree, check=False, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} {function} on {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def against_pairs(script: Path, args: tuple[Any, ...], against: Path | None, pairs: int) -> dict[str, Any]:
    """``measure(*args)`` of ``script`` on this checkout and, given ``against``, on that one
    too, ``pairs`` times in alternating order (each in a fresh interpreter): every run, the
    medians of each tree's ``cpu_ms_p50`` and ``wall_ms_p50``, and this / against."""
    trees = {"this": ROOT} | ({"against": against.resolve()} if against else {})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for n in range(pairs if against else 1):
        for name in (list(trees) if n % 2 == 0 else list(trees)[::-1]):
            runs[name].append(measure_in(trees[name], script, "measure", *args))
            print(f"pair {n + 1}, {name}: {json.dumps(runs[name][-1])}", flush=True)
    result: dict[str, Any] = {"pairs": len(runs["this"]), "against": str(trees.get("against", "")),
                              "runs": runs}
    for name, figures in runs.items():
        for key in ("cpu_ms_p50", "wall_ms_p50"):
            result[f"{name}_{key}"] = statistics.median(f[key] for f in figures)
    if against:
        result["cpu_ratio"] = result["this_cpu_ms_p50"] / result["against_cpu_ms_p50"]
        result["wall_ratio"] = result["this_wall_ms_p50"] / result["against_wall_ms_p50"]
    return result


def keep(result: dict[str, Any], out: Path, name: str) -> Path:
    """Write a benchmark's ``result`` (holding its ``machine()``) as
    ``<out>/<name>-<UTC time>-<commit>.json``; the path."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = result["machine"]["at"][:19].replace(":", "")
    path = out / f"{name}-{stamp}-{result['machine']['commit']}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


# (figure, target, met?) for each of issue 17's targets, from the results.
TARGETS: tuple[tuple[str, str, Callable[[dict[str, Any]], bool]], ...] = (
    ("latency_ratio", "end-to-end p50 <= 5x floor round trip", lambda r: r["latency_ratio"] <= 5),
    ("throughput_ratio", "throughput >= 0.57 of the floor's burst", lambda r: r["throughput_ratio"] >= 0.57),
    ("submit_jobs_per_s", "submit >= 1,000 jobs/s from 32 clients", lambda r: r["submit_jobs_per_s"] >= 1000),
    ("array_tasks_per_s", "array tasks accepted >= 20,000/s", lambda r: r["array_tasks_per_s"] >= 20_000),
    ("cpu_ms_per_job", "CPU per job, all overlay processes, <= 6 ms", lambda r: r["cpu_ms_per_job"] <= 6),
    ("turnover_ratio", "GPU turnover p50 <= 3x floor round trip", lambda r: r["turnover_ratio"] <= 3),
)


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, met) for every target of issue 17."""
    shown = {
        "latency_ratio": lambda: f"{r['latency_ratio']:.1f}x ({r['e2e_p50_ms']:.1f} / "
                                 f"{r['floor_p50_ms']:.1f} ms)",
        "throughput_ratio": lambda: f"{r['throughput_ratio']:.2f} ({r['e2e_jobs_per_s']:.0f} / "
                                    f"{r['floor_jobs_per_s']:.0f} jobs/s)",
        "submit_jobs_per_s": lambda: f"{r['submit_jobs_per_s']:.0f} jobs/s",
        "array_tasks_per_s": lambda: f"{r['array_tasks_per_s']:.0f} tasks/s",
        "cpu_ms_per_job": lambda: f"{r['cpu_ms_per_job']:.1f} ms",
        "turnover_ratio": lambda: f"{r['turnover_ratio']:.1f}x ({r['turnover_p50_ms']:.1f} / "
                                  f"{r['floor_p50_ms']:.1f} ms)",
    }
    rows = []
    for key, target, met in TARGETS:
        if key not in r:
            why = r.get("array_not_measured", "") if key == "array_tasks_per_s" else ""
            rows.append((target, f"not measured: {why}" if why else "not measured", "-"))
        else:
            rows.append((target, shown[key](), "yes" if met(r) else "no"))
    return rows


def table(r: dict[str, Any]) -> str:
    rows = [
        ("floor round trip p50 / p95", f"{r['floor_p50_ms']:.1f} / {r['floor_p95_ms']:.1f} ms"),
        ("floor burst throughput", f"{r['floor_jobs_per_s']:.0f} jobs/s"),
        ("overlay end to end p50 / p95 (client)", f"{r['e2e_p50_ms']:.1f} / {r['e2e_p95_ms']:.1f} ms"),
        ("overlay enqueued -> finished p50 / p95 (server)",
         f"{r['e2e_server_p50_ms']:.1f} / {r['e2e_server_p95_ms']:.1f} ms"),
        ("overlay throughput, 32 clients", f"{r['e2e_jobs_per_s']:.0f} jobs/s"),
        ("submit API, 32 clients (the stack running)", f"{r['submit_jobs_per_s']:.0f} jobs/s "
         f"(p50 {r['submit_p50_ms']:.1f} ms, p95 {r['submit_p95_ms']:.1f} ms)"),
        ("CPU per job, all overlay processes (throughput run)", f"{r['cpu_ms_per_job']:.1f} ms: " + ", ".join(
            f"{k.removeprefix('cpu_ms_per_job_')} {v:.1f}" for k, v in r.items()
            if k.startswith("cpu_ms_per_job_"))),
        ("GPU turnover p50 / p95 (a GPU's end -> its next start)",
         f"{r['turnover_p50_ms']:.1f} / {r['turnover_p95_ms']:.1f} ms "
         f"(floor round trip {r['floor_p50_ms']:.1f} ms; `true` ran {r['true_run_p50_ms']:.1f} ms p50)"),
        ("of which: the end -> the next job's pass began / the pass began -> it ran (p50s)",
         f"{r.get('turnover_to_placed_p50_ms', float('nan')):.1f} / "
         f"{r.get('turnover_placed_to_running_p50_ms', float('nan')):.1f} ms"),
        ("latency ratio (e2e p50 / floor p50)", f"{r['latency_ratio']:.2f}x"),
        ("throughput ratio (e2e / floor)", f"{r['throughput_ratio']:.2f}"),
        ("turnover ratio (turnover p50 / floor p50)", f"{r['turnover_ratio']:.2f}x"),
        ("scheduling pass, 10,000 jobs on 1,000 nodes, in memory (plan_pass)", f"{r['pass_10k_ms']:.1f} ms"),
    ]
    if "pass_10k_db_ms" in r:
        rows.append(("scheduling pass, 10,000 jobs on 1,000 nodes, with Postgres and the sends",
                     f"{r['pass_10k_db_ms']:.0f} ms ({r['pass_10k_db_placed']} placed; sending "
                     f"{r['pass_10k_db_send_ms']:.0f} ms)"))
    if "pass_10k_db_one_by_one_ms" in r:
        rows.append(("the same pass writing one placement at a time (before overlay/store/placing.py)",
                     f"{r['pass_10k_db_one_by_one_ms']:.0f} ms, without the sends"))
    if "array_tasks_per_s" in r:
        rows.append((f"array of {r['counts']['array']:,} tasks accepted",
                     f"{r['array_tasks_per_s']:.0f} tasks/s"))
    for policy, by_nodes in r["placement_median_us"].items():
        cells = ", ".join(f"{n}: {us:.1f}" for n, us in by_nodes.items())
        rows.append((f"placement {policy}, median us by nodes", cells))
    title = f"median of {r['repeats']} side-by-side run(s)" if r.get("repeats", 1) > 1 else "one run"
    m = r["machine"]
    lines = [f"{m['cores']} cores, load average {', '.join(f'{x:.1f}' for x in m['load_average'])} at start, "
             f"commit {m['commit']}{' (with uncommitted changes)' if m['uncommitted_changes'] else ''}", "",
             f"| measurement ({title}) | result |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), "",
             "| target (issue 17) | measured | met |", "|---|---|---|",
             *(f"| {a} | {b} | {c} |" for a, b, c in verdicts(r))]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, one run")
    parser.add_argument("--repeats", type=int, default=None,
                        help="side-by-side runs to take medians over (default 3, 1 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = machine()
    results = run(args.quick, args.repeats or (1 if args.quick else 3))
    results["machine"] = started
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started["at"][:19].replace(":", "")
    kept = f"bench-{stamp}-{started['commit']}{'-quick' if args.quick else ''}.json"
    for name in (kept, "latest.json"):
        (args.out / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    (args.out / "latest.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
