"""``make bench``'s stack run under two values of one setting, alternating, for the
side-by-side benchmarks (bench/supervisor_start.py, bench/pass_at_end.py): CPU per job
and GPU turnover of each way, and the median of the per-repeat ratios."""

from __future__ import annotations

import os
import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import measure_throughput, measure_turnover, stack_cpu, start_stack, submit_and_wait
from overlay.store.session import ensure_database, migrate
from tests.conftest import PG_SERVER, drop_database
from tests.integration.harness import Stack

FIGURES = ("cpu_ms_per_job", "cpu_ms_per_job_agents", "cpu_ms_per_job_node-a", "cpu_ms_per_job_node-b",
           "cpu_ms_per_job_api", "cpu_ms_per_job_scheduler", "e2e_jobs_per_s", "turnover_p50_ms",
           "turnover_p95_ms", "turnover_to_placed_p50_ms", "turnover_placed_to_running_p50_ms",
           "true_run_p50_ms")


def on_stack(setting: str, value: str, jobs: int, turnover: int,
             check: Callable[[Stack], None] | None = None) -> dict[str, Any]:
    """The stack with ``setting=value``: ``jobs`` `true` jobs from 32 clients (CPU per job,
    all overlay processes and by process), then ``turnover`` one-GPU `true` jobs at once
    over the 6 fake GPUs; ``check`` looks at the stack before it stops."""
    workdir = Path(tempfile.mkdtemp(prefix=f"overlay-bench-{value}-"))
    database_url = f"{PG_SERVER}/overlay_bench_{uuid.uuid4().hex[:8]}"
    ensure_database(database_url)
    migrate(database_url)
    results: dict[str, Any] = {"mode": value, "load_average": os.getloadavg()}
    stack = start_stack(database_url, workdir, **{setting: value})
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
        if check is not None:
            check(stack)
    finally:
        stack.stop_all()
        drop_database(database_url)
    return results


def summary(runs: list[dict[str, Any]], ways: tuple[str, str]) -> dict[str, Any]:
    """Per figure: the median of each way, and the median of the per-repeat ratios
    ``ways[1]`` / ``ways[0]``."""
    before, after = ways
    out: dict[str, Any] = {}
    for key in FIGURES:
        olds, news = [r[before][key] for r in runs], [r[after][key] for r in runs]
        out[key] = {before: statistics.median(olds), after: statistics.median(news),
                    "ratio": statistics.median(n / o for n, o in zip(news, olds, strict=True))}
    return out


def rows(result: dict[str, Any], ways: tuple[str, str]) -> list[str]:
    """The stack's figures as table rows (``| figure | before | after | ratio |``)."""
    before, after = ways
    return [f"| {key} | {row[before]:.1f} | {row[after]:.1f} | {row['ratio']:.2f} |"
            for key, row in result["stack"].items()]
