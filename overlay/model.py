"""Domain values: what a job asks for, what a GPU and a node are, what placement decides.

Frozen, keyword-only dataclasses; the store converts rows to these at its edge.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from overlay.states import JobState


class NodeState(enum.StrEnum):
    ONLINE = "online"
    DRAINING = "draining"
    # Its agent got SIGTERM: no new work; its jobs go on under their supervisors.
    STOPPING = "stopping"
    OFFLINE = "offline"


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a user asked for: the command and the resources it needs."""

    job_id: str
    cmd: tuple[str, ...]
    image: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0
    gpu_memory_mb: int = 0
    gpu_model: str = ""
    node_selector: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    timeout_s: int | None = None
    max_retries: int = 0
    # The job's memory limit (its cgroup's), MiB; 0: none.
    memory_mb: int = 0
    # Who runs it: fair share and quotas count by these (overlay.fairshare, overlay.quota).
    account: str = "default"
    user: str = "default"
    # A task of a job array (overlay.arrays): the array's id and this task's index.
    array_id: str | None = None
    array_index: int | None = None
    # False: never preempted, and so never placed on borrowed GPUs (overlay.preemption).
    preemptible: bool = True
    # A gang job (overlay.gang): this many parts, each on a node of its own with ``gpus`` there.
    nodes: int = 1


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job as stored: its spec plus where it is in its life."""

    spec: JobSpec
    state: JobState
    attempt: int = 0
    node: str | None = None
    gpus: tuple[int, ...] = ()
    exit_code: int | None = None
    reason: str | None = None
    enqueued_at: datetime | None = None
    placed_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Placed on idle GPUs beyond its account's quota (overlay.quota): first to give them back.
    borrowed: bool = False
    # How many attempts were preempted: they count in ``attempt`` but not against max_retries.
    preemptions: int = 0
    # QUEUED after a preemption: the job it was preempted for (None once placed again).
    preempted_by: str | None = None
    preempted_at: datetime | None = None
    # A gang job's rendezvous (overlay.gang): rank 0's address and the port chosen for the job.
    master_addr: str | None = None
    master_port: int | None = None
    # Which part of a gang job this value runs (``node`` and ``gpus`` are that part's).
    part: int = 0

    @property
    def job_id(self) -> str:
        return self.spec.job_id


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    """One entry of a job's history: a transition, or a note (``from_state == to_state``)."""

    at: datetime
    from_state: str | None
    to_state: str
    attempt: int
    node: str | None = None
    gpus: tuple[int, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class GpuDevice:
    """One GPU as its probe last saw it. Memory in MiB, power in watts."""

    index: int
    uuid: str
    name: str
    memory_total_mb: int
    memory_used_mb: int = 0
    memory_free_mb: int = 0
    utilization_gpu_pct: int = 0
    utilization_memory_pct: int = 0
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    compute_capability: str | None = None
    mig_mode: str | None = None
    # NVML's total energy counter in mJ since the driver loaded; None where the GPU has none.
    energy_mj: int | None = None


@dataclass(frozen=True, kw_only=True)
class ProbeReport:
    """Everything one sampling of a node's GPUs found."""

    mode: str  # "real" or "fake"
    gpus: tuple[GpuDevice, ...]
    driver_version: str | None = None
    cuda_version: str | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class NodeSnapshot:
    """A node as placement sees it: its GPUs, labels, state and which GPUs are held.

    ``slots`` is how many jobs its agent runs at once (None: no limit) and ``running``
    how many it has now (placed or running): a node with every slot busy takes no job,
    GPUs free or not, since the job would only wait in its agent's queue.
    """

    name: str
    gpus: tuple[GpuDevice, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    state: NodeState = NodeState.ONLINE
    taken: frozenset[int] = frozenset()
    slots: int | None = None
    running: int = 0


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Placement's yes: run the job on ``node`` with these GPU indices."""

    node: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class GangPlacement(Placement):
    """A gang job's yes: one placement per part (rank), each on a node of its own; ``node``
    and ``gpus`` are rank 0's."""

    parts: tuple[Placement, ...]


@dataclass(frozen=True, kw_only=True)
class JobPart:
    """One part of a gang job's current attempt: where it runs and how it ended."""

    part: int
    node: str
    gpus: tuple[int, ...]
    state: str  # PLACED, RUNNING, or how it ended: DONE, FAILED, CANCELLED
    exit_code: int | None = None
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class NoFit:
    """Placement's no, with a reason a person can act on."""

    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """A node as people see it: the snapshot plus its agent's health and who holds each GPU."""

    snapshot: NodeSnapshot
    hostname: str
    agent_health: Mapping[str, Any]
    last_seen: datetime
    holders: Mapping[int, str] = field(default_factory=dict)
