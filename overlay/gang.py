"""Gang jobs: a job of ``nodes`` parts, placed all or nothing on that many distinct nodes, and
the rendezvous its parts meet at (torchrun's MASTER_ADDR/MASTER_PORT and ranks).

Pure: ``place_gang`` reads the fleet and decides, as ``overlay.placement.place`` does for one
node, and applies nothing; the caller allocates every part or none.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import dataclass

from overlay.fleet import Candidates, Fleet
from overlay.model import GangPlacement, JobSpec, NoFit, Placement
from overlay.placement import place
from overlay.policies import Policy

MAX_NODES = 64
# The ports MASTER_PORT is chosen from unless the settings say otherwise (torchrun's default is 29500).
PORT_RANGE = (29500, 29999)


def place_gang(job: JobSpec, fleet: Fleet, *, policy: Policy) -> GangPlacement | NoFit:
    """Place each of ``job.nodes`` parts on a node of its own, in rank order, each where
    ``policy`` picks among the nodes no earlier part took (same constraints as one node).

    NoFit when fewer than ``job.nodes`` online nodes can take a part now: then no part is
    placed. Raises ValueError when the policy names a node that is not one of its candidates.
    """
    found = fleet.candidates(job)
    if isinstance(found, NoFit):
        return found
    parts: list[Placement] = []
    used: set[str] = set()
    for _ in range(job.nodes):
        left = without(found, used)
        node = policy(left) if left.buckets else None
        if node is None:
            return _short(job, fleet, found)
        if node in used or not fleet.can_take(node, job):
            raise ValueError(f"policy chose {node!r}, which cannot take a part of job {job.job_id!r}")
        used.add(node)
        parts.append(Placement(node=node, gpus=fleet.fitting_gpus(node, job)))
    return GangPlacement(node=parts[0].node, gpus=parts[0].gpus, parts=tuple(parts))


def parts_of(placement: Placement) -> tuple[Placement, ...]:
    """Every part of a placement: a gang's parts by rank, or the one placement itself."""
    return placement.parts if isinstance(placement, GangPlacement) else (placement,)


def place_any(job: JobSpec, fleet: Fleet, *, policy: Policy) -> Placement | NoFit:
    """``place_gang`` for a gang job (``nodes`` > 1), ``overlay.placement.place`` otherwise."""
    return place_gang(job, fleet, policy=policy) if job.nodes > 1 else place(job, fleet, policy=policy)


def held_gpus(placement: Placement) -> int:
    """How many GPUs a placement holds, over all its parts."""
    return sum(len(p.gpus) for p in parts_of(placement))


def without(found: Candidates, used: Collection[str]) -> Candidates:
    """``found`` less the nodes in ``used``."""
    if not used:
        return found
    buckets = tuple((k, kept) for k, names in found.buckets if (kept := [n for n in names if n not in used]))
    return Candidates(needs=found.needs, buckets=buckets)


def _short(job: JobSpec, fleet: Fleet, found: Candidates) -> NoFit:
    fit = sum(len(names) for _, names in found.buckets)
    if fit == 0:
        one = fleet.explain(job)
        return NoFit(reason=f"a gang of {job.nodes} nodes: {one.reason}",
                     details={**one.details, "nodes": job.nodes, "nodes_fitting": 0})
    gpus = f"{job.gpus} GPU{'' if job.gpus == 1 else 's'} each" if job.gpus else "no GPUs"
    return NoFit(reason=f"a gang of {job.nodes} nodes ({gpus}): {fit} online node"
                        f"{'' if fit == 1 else 's'} can take a part now",
                 details={"nodes": job.nodes, "nodes_fitting": fit})


def pick_port(job_id: str, attempt: int, *, taken: Collection[int],
              low: int = PORT_RANGE[0], high: int = PORT_RANGE[1]) -> int:
    """MASTER_PORT for an attempt: a port of [low, high] that depends only on the job and
    attempt, moved on past the ports in ``taken`` (those of other gangs on the same rank-0
    node); when every port is taken, the first choice. Raises ValueError for an empty range."""
    if high < low:
        raise ValueError(f"empty port range {low}-{high}")
    span = high - low + 1
    first = zlib.crc32(f"{job_id}.{attempt}".encode()) % span
    for step in range(span):
        port = low + (first + step) % span
        if port not in taken:
            return port
    return low + first


@dataclass(frozen=True, kw_only=True)
class Rendezvous:
    """Where a gang's parts meet, and which part this is."""

    master_addr: str
    master_port: int
    rank: int


def rendezvous_env(job: JobSpec, r: Rendezvous) -> dict[str, str]:
    """The variables torchrun's multi-node flags read from: ``WORLD_SIZE`` and ``NNODES`` are
    the node count (torchrun works out its own world size as nnodes × nproc-per-node)."""
    nodes = str(job.nodes)
    return {"MASTER_ADDR": r.master_addr, "MASTER_PORT": str(r.master_port), "WORLD_SIZE": nodes,
            "NNODES": nodes, "NODE_RANK": str(r.rank), "GPUS_PER_NODE": str(job.gpus),
            "OVERLAY_PART": str(r.rank)}
