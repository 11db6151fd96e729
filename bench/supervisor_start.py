"""Supervisor start, fork (the agent's launcher) against exec (a new interpreter), side by side.

Two parts, each alternating the two ways in one run on one machine, so their ratio
compares like with like on a noisy one:

- **alone**: this process starts ``--alone`` supervisors of ``true`` one after the other,
  as an agent does (workers/attempts.py: prepare the attempt directory, start its
  supervisor, wait for its end), by ``Launcher.launch`` and by ``spawn``, in blocks of
  ten alternating; per attempt, the wall time from the start to the end seen, and the
  CPU of this process and all its descendants (the launcher, the supervisors, the jobs;
  /proc, as ``make bench`` counts it).
- **stack**: ``make bench``'s stack (bench/run.py ``start_stack``) once with
  ``SUPERVISOR_LAUNCHER=exec`` and once with ``fork``, in alternating order each repeat:
  ``--jobs`` `true` jobs from 32 clients (CPU per job, all overlay processes and by
  process, as ``make bench``), then ``--turnover`` one-GPU `true` jobs at once over
  the 6 fake GPUs (GPU turnover p50 / p95 and the `true` job's own RUNNING -> DONE).

    python -m bench.supervisor_start                       # 3 repeats, 300 jobs, 150 for turnover
    python -m bench.supervisor_start --repeats 1 --jobs 100 --turnover 60 --alone 40

Keeps its result as bench/results/supervisor-start-<UTC time>-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.run import (
    RESULTS,
    cpu_seconds,
    keep,
    log,
    machine,
    measure_throughput,
    measure_turnover,
    pct,
    stack_cpu,
    start_stack,
    submit_and_wait,
)
from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from workers import attempts
from workers.attempts import AttemptDir, Launcher

MODES = ("exec", "fork")
BLOCK = 10


def alone(count: int, workdir: Path) -> dict[str, dict[str, float]]:
    """``count`` supervisors of `true` each way, started and waited for by this process."""
    launcher = Launcher()
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
    me = [os.getpid()]
    try:
        for n in range(-1, count // BLOCK):  # block -1: warm both ways (the launcher starts)
            for mode in MODES if n % 2 == 0 else MODES[::-1]:
                cpu_before = cpu_seconds(me)
                for i in range(BLOCK):
                    directory = AttemptDir(workdir / "state" / f"{mode}{n}-{i}.1", f"bench-{mode}{n}-{i}", 1)
                    attempts.prepare(directory, spec(workdir, directory))
                    t0 = time.perf_counter()
                    supervisor = launcher.launch(directory) if mode == "fork" else attempts.spawn(directory)
                    while not supervisor.ended(1.0):
                        pass
                    supervisor.close()
                    elapsed = (time.perf_counter() - t0) * 1000
                    outcome = directory.outcome()
                    assert outcome is not None and outcome["exit_code"] == 0, (mode, outcome)
                    directory.remove()
                    if n >= 0:
                        wall[mode].append(elapsed)
                if n >= 0:
                    # the launcher reaps a forked supervisor just after its end is seen: let it
                    time.sleep(0.2)
                    cpu[mode] += cpu_seconds(me) - cpu_before
    finally:
        launcher.close()
    done = len(wall["fork"])
    return {mode: {"wall_p50_ms": statistics.median(wall[mode]), "wall_p95_ms": pct(wall[mode], 0.95),
                   "cpu_ms": cpu[mode] * 1000 / done} for mode in MODES}


def spec(workdir: Path, directory: AttemptDir) -> dict[str, Any]:
    return {"job_id": directory.job_id, "attempt": 1, "argv": ["true"], "env": {"PATH": "/usr/bin:/bin"},
            "user": None, "log_path": str(workdir / f"{directory.job_id}.log"), "log_max_bytes": 0,
            "log_marker": "", "header": "", "timeout_s": None, "memory_mb": 0, "gpus": [],
            "device_dir": "/dev", "fence_s": 60}


def on_stack(mode: str, jobs: int, turnover: int) -> dict[str, Any]:
    """``make bench``'s stack with SUPERVISOR_LAUNCHER=``mode``: CPU per job, turnover."""
    workdir = Path(tempfile.mkdtemp(prefix=f"overlay-bench-{mode}-"))
    database_url = f"{PG_SERVER}/overlay_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    results: dict[str, Any] = {"mode": mode, "load_average": os.getloadavg()}
    stack = start_stack(database_url, workdir, SUPERVISOR_LAUNCHER=mode)
    try:
        import requests

        http = requests.Session()
        for _ in range(4):  # warm: each agent's launcher started, connections open
            assert submit_and_wait(http, stack.api)["state"] == "DONE"
        cpu_before = stack_cpu(stack)
        results.update(measure_throughput(stack.api, jobs))
        cpu = {name: (seconds - cpu_before[name]) * 1000 / jobs for name, seconds in stack_cpu(stack).items()}
        results["cpu_ms_per_job"] = sum(cpu.values())
        results["cpu_ms_per_job_agents"] = cpu.get("node-a", 0) + cpu.get("node-b", 0)
        results.update({f"cpu_ms_per_job_{name}": ms for name, ms in cpu.items()})
        results.update(measure_turnover(stack, database_url, turnover))
        fallbacks = sum("cannot use the supervisor launcher" in stack.output(n) for n in ("node-a", "node-b"))
        assert fallbacks == 0, f"an agent could not use its launcher ({mode})"
    finally:
        stack.stop_all()
        drop_database(database_url)
    return results


FIGURES = ("cpu_ms_per_job", "cpu_ms_per_job_agents", "cpu_ms_per_job_node-a", "cpu_ms_per_job_node-b",
           "cpu_ms_per_job_api", "cpu_ms_per_job_scheduler", "e2e_jobs_per_s", "turnover_p50_ms",
           "turnover_p95_ms", "true_run_p50_ms")


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: the median of each way, and the median of the per-repeat ratios fork/exec."""
    out: dict[str, Any] = {}
    for key in FIGURES:
        execs, forks = [r["exec"][key] for r in runs], [r["fork"][key] for r in runs]
        out[key] = {"exec": statistics.median(execs), "fork": statistics.median(forks),
                    "ratio": statistics.median(f / e for f, e in zip(forks, execs, strict=True))}
    return out


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"{m['cores']} cores, load average {', '.join(f'{x:.1f}' for x in m['load_average'])} at start, "
             f"commit {m['commit']}{' (with uncommitted changes)' if m['uncommitted_changes'] else ''}", "",
             f"| alone: {result['alone_count']} supervisors of `true` each way | exec | fork | fork / exec |",
             "|---|---|---|---|"]
    for key in ("wall_p50_ms", "wall_p95_ms", "cpu_ms"):
        e, f = result["alone"]["exec"][key], result["alone"]["fork"][key]
        lines.append(f"| {key} | {e:.1f} | {f:.1f} | {f / e:.2f} |")
    lines += ["", f"| stack: {result['jobs']} jobs, turnover {result['turnover']} jobs, "
              f"{result['repeats']} repeat(s), medians | exec | fork | fork / exec (median of ratios) |",
              "|---|---|---|---|"]
    for key, row in result["stack"].items():
        lines.append(f"| {key} | {row['exec']:.1f} | {row['fork']:.1f} | {row['ratio']:.2f} |")
    loads = ", ".join(f"{r[mode]['load_average'][0]:.1f}" for r in result["runs"] for mode in MODES)
    lines += ["", f"load average (1 min) at the start of each stack: {loads}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=300, help="jobs from 32 clients for CPU per job")
    parser.add_argument("--turnover", type=int, default=150, help="one-GPU jobs for the turnover")
    parser.add_argument("--alone", type=int, default=100, help="supervisors each way, no stack")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "repeats": args.repeats, "jobs": args.jobs,
                              "turnover": args.turnover, "alone_count": args.alone}
    log(f"alone: {args.alone} supervisors each way")
    result["alone"] = alone(args.alone, Path(tempfile.mkdtemp(prefix="overlay-bench-alone-")))
    runs = []
    for i in range(args.repeats):
        run: dict[str, Any] = {}
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            log(f"repeat {i + 1} of {args.repeats}: the stack with SUPERVISOR_LAUNCHER={mode}")
            run[mode] = on_stack(mode, args.jobs, args.turnover)
        runs.append(run)
    result["runs"] = runs
    result["stack"] = summary(runs)
    result["load_average_at_end"] = os.getloadavg()
    path = keep(result, args.out, "supervisor-start")
    print(table(result))
    log(f"kept {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
