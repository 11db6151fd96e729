"""Backfill reservations in the simulator: one synthetic workload replayed with them and
without, and what they change for the largest jobs and for the fleet.

    python -m bench.backfill                       # 100 nodes of 8 GPUs, 20,000 jobs, best-fit
    python -m bench.backfill --nodes 50 --jobs 5000 --policy first-fit
    python -m bench.backfill --mix stream          # 1-GPU jobs and a few node-sized ones

``--mix synthetic`` is the simulator's own job stream (docs/simulate.md). ``--mix stream`` is
the case backfill is for: the same arrivals and run times, but 95% of the jobs ask for one
GPU and 5% for a whole node, any model, with the submit times scaled so that the work
offered is still ``--load`` of the fleet.

Prints, for each run, the fleet's utilization, every job's p50/p99 wait, and the p50/p99/max
wait of the jobs that ask for the most GPUs (8 in the synthetic stream), and the run's time.
docs/simulate.md reports these figures with the command that produced them.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

from overlay.policies import SUPPORTED, get_policy
from overlay.simulation import SimEvent, percentile, simulate
from overlay.workload import SimJob, synthetic_fleet, synthetic_jobs

BIG_SHARE = 0.05  # --mix stream: the share of node-sized jobs


def run(args: argparse.Namespace, *, backfill: bool) -> dict[str, float]:
    """Replay the workload once; the figures as a flat dict."""
    nodes = synthetic_fleet(args.nodes, args.gpus_per_node, seed=args.seed)
    jobs = list(synthetic_jobs(args.jobs, total_gpus=args.nodes * args.gpus_per_node,
                               gpus_per_node=args.gpus_per_node, load=args.load, seed=args.seed))
    if args.mix == "stream":
        jobs = stream(jobs, args)
    largest = max(j.spec.gpus for j in jobs)
    waits: list[float] = []

    def seen(event: SimEvent) -> None:
        if event.kind == "start" and event.job.spec.gpus == largest:
            waits.append(event.at_s - event.job.submit_s)

    began = time.perf_counter()
    result = simulate(nodes, jobs, policy=get_policy(args.policy), observer=seen, backfill=backfill)
    waits.sort()
    return {"backfill": backfill, "seconds": time.perf_counter() - began, "largest_gpus": largest,
            "largest_jobs": len(waits), "utilization": result.utilization,
            "wait_p50_s": result.wait_p50_s, "wait_p99_s": result.wait_p99_s,
            "largest_p50_s": percentile(waits, 50), "largest_p99_s": percentile(waits, 99),
            "largest_max_s": waits[-1] if waits else 0.0, "placed": result.placed, "jobs": result.jobs}


def stream(jobs: list[SimJob], args: argparse.Namespace) -> list[SimJob]:
    """``jobs`` as 1-GPU and node-sized jobs of any model, spaced to offer ``args.load``."""
    rng = random.Random(f"stream-{args.seed}")
    sized = [replace(j, spec=replace(j.spec, gpus=args.gpus_per_node if rng.random() < BIG_SHARE else 1,
                                     gpu_model="", gpu_memory_mb=0, node_selector={})) for j in jobs]
    span = sized[-1].submit_s - sized[0].submit_s
    offered = sum(j.spec.gpus * j.duration_s for j in sized) / (span * args.nodes * args.gpus_per_node)
    stretch = offered / args.load
    return [replace(j, submit_s=j.submit_s * stretch) for j in sized]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--load", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", choices=SUPPORTED, default="best-fit")
    parser.add_argument("--mix", choices=["synthetic", "stream"], default="synthetic")
    args = parser.parse_args()
    print(f"{args.nodes} nodes x {args.gpus_per_node} GPUs, {args.jobs} jobs ({args.mix}), load {args.load}, "
          f"seed {args.seed}, {args.policy}")
    print(f"{'reservations':<13}{'util':>7}{'p50 all':>10}{'p99 all':>10}"
          f"{'p50 big':>10}{'p99 big':>10}{'max big':>10}{'run s':>8}")
    for backfill in (False, True):
        r = run(args, backfill=backfill)
        print(f"{'on' if backfill else 'off':<13}{r['utilization']:>7.1%}{r['wait_p50_s']:>10.0f}"
              f"{r['wait_p99_s']:>10.0f}{r['largest_p50_s']:>10.0f}{r['largest_p99_s']:>10.0f}"
              f"{r['largest_max_s']:>10.0f}{r['seconds']:>8.1f}")
        print(f"{'':<13}({r['largest_jobs']} jobs of {r['largest_gpus']} GPUs; {r['placed']} of "
              f"{r['jobs']} placed)")


if __name__ == "__main__":
    main()
