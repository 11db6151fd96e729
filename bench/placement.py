"""Placement benchmark: one decision per policy as the fleet grows, and a 10,000-job pass.

Run ``python -m bench.placement [--quick]``; ``run(quick)`` returns the figures for ``make bench``.
A decision is timed against a fleet whose views are already built (the first request of
each shape builds its view in O(nodes); a scheduling pass pays that once per shape).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from overlay.fleet import Fleet
from overlay.model import GpuDevice, JobSpec, NodeSnapshot, NodeState
from overlay.placement import place
from overlay.policies import POLICIES
from overlay.queueing import QueuedJob, plan_pass

NODE_COUNTS = (10, 100, 1_000, 5_000)
GPUS_PER_NODE = 8
# (name, MiB): the models a mixed fleet holds.
MODELS = (
    ("NVIDIA A100-SXM4-80GB", 81920),
    ("NVIDIA A100-PCIE-40GB", 40960),
    ("NVIDIA H100 80GB HBM3", 81559),
    ("NVIDIA L4", 23034),
    ("NVIDIA A10", 23028),
)
ZONES = ("a", "b", "c", "d")
TIERS = ("prod", "dev")
# (gpus, gpu_memory_mb, gpu_model, node_selector): the request mix.
REQUESTS = (
    (1, 0, "", {}),
    (2, 0, "", {}),
    (4, 0, "", {}),
    (8, 0, "", {}),
    (1, 40000, "", {}),
    (2, 0, "a100", {}),
    (4, 80000, "h100", {}),
    (1, 0, "l4", {"zone": "b"}),
    (2, 0, "", {"tier": "prod"}),
    (4, 0, "a100", {"zone": "a", "tier": "prod"}),
    (0, 0, "", {"zone": "c"}),
)


def make_nodes(count: int, *, seed: int = 0) -> list[NodeSnapshot]:
    """``count`` nodes of 8 GPUs, half of them taken; one node in ten mixes two models."""
    rng = random.Random(seed)
    nodes = []
    for n in range(count):
        first, second = rng.choice(MODELS), rng.choice(MODELS)
        models = [first] * 4 + [second if n % 10 == 0 else first] * 4
        gpus = tuple(GpuDevice(index=i, uuid=f"GPU-{n}-{i}", name=name, memory_total_mb=mb)
                     for i, (name, mb) in enumerate(models))
        state = NodeState.DRAINING if n % 50 == 7 else NodeState.ONLINE
        nodes.append(NodeSnapshot(
            name=f"node-{n:05d}", gpus=gpus, state=state,
            labels={"zone": rng.choice(ZONES), "tier": rng.choice(TIERS)},
            taken=frozenset(rng.sample(range(GPUS_PER_NODE), GPUS_PER_NODE // 2)),
        ))
    return nodes


def make_jobs(count: int, *, seed: int = 0) -> list[QueuedJob]:
    """``count`` queued jobs drawn from the request mix, priorities 0-2, a second apart."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    jobs = []
    for i in range(count):
        gpus, mem, model, selector = rng.choice(REQUESTS)
        spec = JobSpec(job_id=f"job-{i}", cmd=("true",), gpus=gpus, gpu_memory_mb=mem,
                       gpu_model=model, node_selector=selector, priority=rng.choice((0, 0, 1, 2)))
        jobs.append(QueuedJob(spec=spec, enqueued_at=start + timedelta(seconds=i)))
    return jobs


def decision_us(nodes: int, policy: Callable, repeats: int) -> float:
    """Median µs of one ``place`` over the request mix, on a warm fleet of ``nodes``."""
    fleet = Fleet.from_snapshots(make_nodes(nodes))
    specs = [job.spec for job in make_jobs(len(REQUESTS) * 4, seed=1)]
    for spec in specs:  # build each shape's view, as the first job of a pass would
        place(spec, fleet, policy=policy)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(repeats):
        for spec in specs:
            t0 = clock()
            place(spec, fleet, policy=policy)
            samples.append(clock() - t0)
    return statistics.median(samples) / 1_000


def pass_ms(nodes: int, jobs: int, repeats: int, *, memo: bool = True) -> tuple[float, float]:
    """Median ms of building the fleet, and of a first-fit pass of ``jobs`` over it."""
    snapshots, queue = make_nodes(nodes), make_jobs(jobs)
    builds, passes = [], []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fleet = Fleet.from_snapshots(snapshots)
        t1 = time.perf_counter_ns()
        plan_pass(queue, fleet, policy=POLICIES["first-fit"], memo=memo)
        t2 = time.perf_counter_ns()
        builds.append(t1 - t0)
        passes.append(t2 - t1)
    return statistics.median(builds) / 1e6, statistics.median(passes) / 1e6


def run(quick: bool = False) -> dict:
    """Time it all; {"placement_median_us": {policy: {nodes: us}}, "pass_10k_ms": ms, ...}."""
    repeats = 20 if quick else 200
    medians = {
        name: {n: decision_us(n, policy, repeats) for n in NODE_COUNTS}
        for name, policy in POLICIES.items()
    }
    rounds = 3 if quick else 7
    build, passed = pass_ms(1_000, 10_000, rounds)
    _, unmemo = pass_ms(1_000, 10_000, rounds, memo=False)
    return {"placement_median_us": medians, "pass_10k_ms": passed,
            "pass_10k_no_memo_ms": unmemo, "fleet_build_1k_ms": build}


def report(figures: dict) -> str:
    """The figures as a plain-text table."""
    head = "policy      " + "".join(f"{n:>10,}" for n in NODE_COUNTS) + "   (median µs per decision)"
    rows = [f"{name:<12}" + "".join(f"{us[n]:>10.1f}" for n in NODE_COUNTS)
            for name, us in figures["placement_median_us"].items()]
    tail = [f"pass of 10,000 jobs on 1,000 nodes: {figures['pass_10k_ms']:.1f} ms "
            f"(without the shape memo {figures['pass_10k_no_memo_ms']:.1f} ms; "
            f"building the fleet {figures['fleet_build_1k_ms']:.1f} ms)"]
    return "\n".join([head, *rows, "", *tail])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    print(report(run(quick=parser.parse_args().quick)))


if __name__ == "__main__":
    main()
