"""Who runs the pass a job's end asks for, PASS_AT_END=scheduler against =agent, side by side.

``make bench``'s stack (bench/run.py ``start_stack``) once each way, in alternating order
each repeat: ``--jobs`` `true` jobs from 32 clients (CPU per job, all overlay processes
and by process), then ``--turnover`` one-GPU `true` jobs at once over the 6 fake GPUs
(GPU turnover p50 / p95, split at the next job's PLACED, and the `true` job's own
RUNNING -> DONE). For the agent way, how many placements the agents made themselves
(their log's "placed on" lines) against the scheduler's.

    python -m bench.pass_at_end                     # 3 repeats, 300 jobs, 240 for turnover
    python -m bench.pass_at_end --repeats 1 --jobs 60 --turnover 60

Keeps its result as bench/results/pass-at-end-<UTC time>-<commit>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench import ways
from bench.run import RESULTS, keep, log, machine
from tests.integration.harness import Stack

WAYS = ("scheduler", "agent")


def placements(stack: Stack, counts: dict[str, int]) -> None:
    """How many jobs each process placed (its log's "placed on" lines)."""
    for name in ("scheduler", "node-a", "node-b"):
        counts[name] = stack.output(name).count(" placed on ")


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"{m['cores']} cores, load average {', '.join(f'{x:.1f}' for x in m['load_average'])} at start, "
             f"commit {m['commit']}{' (with uncommitted changes)' if m['uncommitted_changes'] else ''}", "",
             f"| stack: {result['jobs']} jobs, turnover {result['turnover']} jobs, {result['repeats']} "
             "repeat(s), medians | PASS_AT_END=scheduler | =agent | agent / scheduler (median of ratios) |",
             "|---|---|---|---|", *ways.rows(result, WAYS)]
    for r in result["runs"]:
        by = r["agent"]["placed_by"]
        lines.append(f"\nplacements with PASS_AT_END=agent: {by['node-a'] + by['node-b']} by the agents, "
                     f"{by['scheduler']} by the scheduler")
    loads = ", ".join(f"{r[way]['load_average'][0]:.1f}" for r in result["runs"] for way in WAYS)
    lines += ["", f"load average (1 min) at the start of each stack: {loads}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=300, help="jobs from 32 clients for CPU per job")
    parser.add_argument("--turnover", type=int, default=240, help="one-GPU jobs for the turnover")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict[str, Any] = {"machine": machine(), "repeats": args.repeats, "jobs": args.jobs,
                              "turnover": args.turnover}
    runs = []
    for i in range(args.repeats):
        run: dict[str, Any] = {}
        for way in WAYS if i % 2 == 0 else WAYS[::-1]:
            log(f"repeat {i + 1} of {args.repeats}: the stack with PASS_AT_END={way}")
            by: dict[str, int] = {}
            run[way] = ways.on_stack("PASS_AT_END", way, args.jobs, args.turnover,
                                     check=lambda stack, by=by: placements(stack, by))
            run[way]["placed_by"] = by
        runs.append(run)
    result["runs"] = runs
    result["stack"] = ways.summary(runs, WAYS)
    result["load_average_at_end"] = os.getloadavg()
    path = keep(result, args.out, "pass-at-end")
    print(table(result))
    log(f"kept {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
