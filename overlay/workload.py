"""Simulated work: a synthetic GPU fleet and a seeded stream of jobs to replay against it.

Pure: everything comes from a ``random.Random`` seeded by the caller, so one seed gives
one fleet and one job stream, byte for byte. Reading a workload from a file is the I/O
layer's job (``cli/workload_files.py``); it hands the rows here as ``SimJob`` values.

The synthetic fleet mixes four GPU models by node (a node holds one model, as real
servers do) and labels each node with a zone. The job stream has Poisson arrivals; GPU
counts 1, 2, 4 or 8; a bounded Pareto (heavy-tailed) duration; a few priorities; and
some jobs that ask for a model, a minimum memory per GPU or a zone. The arrival rate
is chosen so that the work offered is ``load`` times what the fleet can do. Given
accounts, each job belongs to one of them (equal demand) and to one of its users.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from overlay.dependencies import Dependency
from overlay.model import GpuDevice, JobSpec, NodeSnapshot

# Queue order needs a time: a job submitted ``s`` seconds in is enqueued at EPOCH + s.
EPOCH = datetime(2024, 1, 1)
CMD = ("true",)

# (share of nodes, GPU name, MiB per GPU)
MODELS: tuple[tuple[float, str, int], ...] = (
    (0.40, "NVIDIA A100-SXM4-80GB", 81920),
    (0.20, "NVIDIA A100-PCIE-40GB", 40960),
    (0.25, "NVIDIA H100 80GB HBM3", 81559),
    (0.15, "NVIDIA L4", 23034),
)
ZONES = ("a", "b", "c", "d")
# (share of jobs, GPUs)
SIZES: tuple[tuple[float, int], ...] = ((0.50, 1), (0.25, 2), (0.15, 4), (0.10, 8))
# (share of jobs, gpu_model, gpu_memory_mb, asks for a zone)
CONSTRAINTS: tuple[tuple[float, str, int, bool], ...] = (
    (0.70, "", 0, False),
    (0.10, "", 40000, False),
    (0.08, "h100", 0, False),
    (0.07, "a100", 0, False),
    (0.05, "", 0, True),
)
# (share of jobs, priority)
PRIORITIES: tuple[tuple[float, int], ...] = ((0.85, 0), (0.10, 1), (0.05, 10))
USERS_PER_ACCOUNT = 3
# Durations: bounded Pareto, shape ALPHA, from SHORTEST_S to LONGEST_S: median ~3 min,
# mean ~6 min, one job in a hundred past ~43 min, one in ten thousand past ~11 h. A fatter
# tail would keep the fleet warming up for the whole of a 1,000,000-job run.
ALPHA, SHORTEST_S, LONGEST_S = 1.5, 120.0, 86400.0


@dataclass(frozen=True, kw_only=True, slots=True)
class SimJob:
    """One job to replay: what it asks for, when it is submitted, how long it runs once placed."""

    spec: JobSpec
    submit_s: float
    duration_s: float
    # What it waits for (overlay.dependencies), and its array's %N limit if it is a task.
    depends_on: tuple[Dependency, ...] = ()
    array_limit: int | None = None

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def enqueued_at(self) -> datetime:
        """When it joined the queue, for ``overlay.queueing.queue_key``."""
        return EPOCH + timedelta(seconds=self.submit_s)


def synthetic_fleet(nodes: int, gpus_per_node: int = 8, *, seed: int = 0) -> list[NodeSnapshot]:
    """``nodes`` online nodes named node-00000…, each with ``gpus_per_node`` GPUs of one model
    and a ``zone`` label. Models come in MODELS' shares (every model once there are as many
    nodes as models), zones in turn; ``seed`` shuffles which node gets which. Raises
    ValueError for a count below 1."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError("a fleet needs at least one node with at least one GPU")
    rng = random.Random(f"fleet-{seed}")
    inventories = [_inventory(name, mb, gpus_per_node) for _, name, mb in MODELS]
    models = _apportion([share for share, *_ in MODELS], nodes)
    rng.shuffle(models)
    labels = [{"zone": zone} for zone in ZONES]
    zones = [n % len(ZONES) for n in range(nodes)]
    rng.shuffle(zones)
    width = max(len(str(nodes - 1)), 5)
    return [NodeSnapshot(name=f"node-{n:0{width}d}", gpus=inventories[m], labels=labels[z])
            for n, (m, z) in enumerate(zip(models, zones, strict=True))]

def synthetic_jobs(
    count: int, *, total_gpus: int, gpus_per_node: int = 8, load: float = 0.9, seed: int = 0,
    accounts: Sequence[str] = (),
) -> Iterator[SimJob]:
    """``count`` jobs in submit order, offering ``load`` × the GPU-seconds ``total_gpus`` can
    run. Sizes above ``gpus_per_node`` are not drawn. With ``accounts``, each job is one
    account's (each as likely) and one of its USERS_PER_ACCOUNT users' (``vision-1``); the
    jobs are otherwise the same as without. Raises ValueError for bad arguments."""
    if count < 0:
        raise ValueError("need count >= 0")
    sizes = _sizes(gpus_per_node)
    rate = arrival_rate(total_gpus=total_gpus, gpus_per_node=gpus_per_node, load=load)
    size_shares = _cumulative([share for share, _ in sizes])
    jobs = _stream(random.Random(f"jobs-{seed}"), count, rate, [g for _, g in sizes], size_shares)
    return _owned(jobs, accounts, random.Random(f"accounts-{seed}")) if accounts else jobs


def _owned(jobs: Iterable[SimJob], accounts: Sequence[str], rng: random.Random) -> Iterator[SimJob]:
    # A stream of its own, so that the jobs are the same with accounts as without.
    for job in jobs:
        account = accounts[rng.randrange(len(accounts))]
        user = f"{account}-{rng.randrange(USERS_PER_ACCOUNT)}"
        yield SimJob(spec=replace(job.spec, account=account, user=user), submit_s=job.submit_s,
                     duration_s=job.duration_s)


def arrival_rate(*, total_gpus: int, gpus_per_node: int = 8, load: float = 0.9) -> float:
    """Jobs per second that offer ``load`` × what ``total_gpus`` can run, for the synthetic mix.

    Raises ValueError unless ``total_gpus`` >= 1 and ``load`` > 0.
    """
    if total_gpus < 1 or not load > 0:
        raise ValueError("need total_gpus >= 1 and load > 0")
    sizes = _sizes(gpus_per_node)
    mean_gpus = sum(share * g for share, g in sizes) / sum(share for share, _ in sizes)
    return load * total_gpus / (mean_gpus * pareto_mean(ALPHA, SHORTEST_S, LONGEST_S))


def _sizes(gpus_per_node: int) -> tuple[tuple[float, int], ...]:
    return tuple((share, g) for share, g in SIZES if g <= gpus_per_node) or ((1.0, 1),)


def _stream(
    rng: random.Random, count: int, rate: float, sizes: Sequence[int], size_shares: Sequence[float]
) -> Iterator[SimJob]:
    constraint_shares = _cumulative([share for share, *_ in CONSTRAINTS])
    priority_shares = _cumulative([share for share, _ in PRIORITIES])
    selectors: list[Mapping[str, str]] = [{"zone": zone} for zone in ZONES]
    width = len(str(max(count - 1, 0)))
    at = 0.0
    for i in range(count):
        at += rng.expovariate(rate)
        _, model, memory, zoned = CONSTRAINTS[_pick(rng, constraint_shares)]
        spec = JobSpec(
            job_id=f"job-{i:0{width}d}", cmd=CMD, gpus=sizes[_pick(rng, size_shares)],
            gpu_model=model, gpu_memory_mb=memory,
            node_selector=selectors[rng.randrange(len(ZONES))] if zoned else {},
            priority=PRIORITIES[_pick(rng, priority_shares)][1],
        )
        yield SimJob(spec=spec, submit_s=at, duration_s=pareto(rng, ALPHA, SHORTEST_S, LONGEST_S))


def pareto(rng: random.Random, alpha: float, low: float, high: float) -> float:
    """A draw of the Pareto(``alpha``) distribution bounded to [``low``, ``high``] (inverse CDF)."""
    ratio = (low / high) ** alpha
    return low / (1.0 - rng.random() * (1.0 - ratio)) ** (1.0 / alpha)


def pareto_mean(alpha: float, low: float, high: float) -> float:
    """The mean of that bounded Pareto (``alpha`` != 1)."""
    scale = low**alpha / (1.0 - (low / high) ** alpha)
    return scale * alpha / (alpha - 1.0) * (low ** (1.0 - alpha) - high ** (1.0 - alpha))


def _inventory(name: str, memory_mb: int, count: int) -> tuple[GpuDevice, ...]:
    # Every node of a model shares one tuple of devices: placement reads only the index,
    # name and memory, and 80,000 GPU values would cost seconds to build.
    slug = name.split()[-1].lower()
    return tuple(GpuDevice(index=i, uuid=f"SIM-{slug}-{i}", name=name, memory_total_mb=memory_mb)
                 for i in range(count))


def _apportion(shares: Sequence[float], count: int) -> list[int]:
    """``count`` indices into ``shares``, each as often as its share (largest remainder), and
    each at least once when ``count`` allows."""
    exact = [share * count / sum(shares) for share in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: count - sum(counts)]:
        counts[i] += 1
    while count >= len(shares) and 0 in counts:
        counts[counts.index(max(counts))] -= 1
        counts[counts.index(0)] += 1
    return [i for i, c in enumerate(counts) for _ in range(c)]


def _cumulative(shares: Iterable[float]) -> list[float]:
    out, total = [], 0.0
    for share in shares:
        total += share
        out.append(total)
    return [x / total for x in out]


def _pick(rng: random.Random, cumulative: Sequence[float]) -> int:
    x = rng.random()
    for i, edge in enumerate(cumulative):
        if x < edge:
            return i
    return len(cumulative) - 1
