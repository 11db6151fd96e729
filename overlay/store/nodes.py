"""The node repository: heartbeats in, live node snapshots and views out, drain flags."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import CompoundSelect, delete, func, select, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from overlay.errors import NodeNotFound
from overlay.liveness import silence_cutoff
from overlay.model import GpuDevice, NodeInfo, NodeSnapshot, NodeState, ProbeReport
from overlay.states import JobState
from overlay.store.session import resolve_now
from overlay.store.tables import GpuAllocationRow, GpuRow, JobPartRow, JobRow, NodeRow

GPU_FIELDS = (
    "uuid", "name", "memory_total_mb", "memory_used_mb", "memory_free_mb",
    "utilization_gpu_pct", "utilization_memory_pct", "temperature_c",
    "power_draw_w", "power_limit_w", "compute_capability", "mig_mode",
)


def record_heartbeat(
    session: Session,
    *,
    name: str,
    hostname: str,
    labels: dict[str, str],
    report: ProbeReport,
    agent_health: dict[str, Any],
    now: datetime | None = None,
) -> None:
    """Upsert the node (online, seen now) and replace its GPU rows with what the probe saw.

    ``now`` is Postgres's clock unless given: last_seen is compared with the
    scheduler's now, so it must not come from the agent's own clock.
    """
    now = resolve_now(session, now)
    node = dict(hostname=hostname, labels=labels, state=NodeState.ONLINE.value,
                agent_health=agent_health, last_seen=now)
    session.execute(
        pg_insert(NodeRow)
        .values(name=name, draining=False, registered_at=now, **node)
        .on_conflict_do_update(index_elements=[NodeRow.name], set_=node)
    )
    seen = [g.index for g in report.gpus]
    session.execute(delete(GpuRow).where(GpuRow.node == name, GpuRow.index.not_in(seen)))
    if report.gpus:
        stmt = pg_insert(GpuRow).values(
            [dict(node=name, index=g.index, updated_at=now, **_gpu_values(g)) for g in report.gpus]
        )
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[GpuRow.node, GpuRow.index],
                set_={f: stmt.excluded[f] for f in (*GPU_FIELDS, "updated_at")},
            )
        )


def expire_nodes(session: Session, *, cutoff: datetime) -> list[str]:
    """Mark online nodes last seen before ``cutoff`` offline; return their names."""
    rows = session.execute(
        update(NodeRow)
        .where(NodeRow.state == NodeState.ONLINE.value)
        .where(NodeRow.last_seen < cutoff)
        .values(state=NodeState.OFFLINE.value)
        .returning(NodeRow.name)
    )
    return sorted(rows.scalars())


def set_draining(session: Session, name: str, draining: bool) -> None:
    """Set or clear a node's drain flag; raise NodeNotFound."""
    result = session.execute(
        update(NodeRow).where(NodeRow.name == name).values(draining=draining).returning(NodeRow.name)
    )
    if result.scalar_one_or_none() is None:
        raise NodeNotFound(name)


def live_snapshots(session: Session, *, now: datetime | None = None, ttl_s: float) -> list[NodeSnapshot]:
    """Snapshots of the nodes placement may use: live as ``node_infos`` judges."""
    return [info.snapshot for info in node_infos(session, now=now, ttl_s=ttl_s)]


_ACTIVE = [JobState.PLACED.value, JobState.RUNNING.value]
# What a pass reads of the fleet every time, built once and read as plain rows (no ORM
# objects): the nodes, their GPUs, who holds each GPU, and how many
# jobs each node runs, a gang job's parts beyond rank 0 counting on their own nodes too.
NODES = select(NodeRow.__table__).order_by(NodeRow.name)
ONLINE_NODES = NODES.where(NodeRow.state == NodeState.ONLINE.value)
# (``index`` labelled apart: a row's own ``index`` is the tuple's method)
GPUS = (select(GpuRow.node, GpuRow.index.label("gpu_index"), *(getattr(GpuRow, f) for f in GPU_FIELDS))
        .order_by(GpuRow.node, GpuRow.index))
HOLDERS = select(GpuAllocationRow.node, GpuAllocationRow.gpu_index, GpuAllocationRow.job_id)
RUNNING: CompoundSelect = union_all(
    select(JobRow.node, func.count()).where(JobRow.state.in_(_ACTIVE)).group_by(JobRow.node),
    select(JobPartRow.node, func.count()).join(JobRow, JobRow.job_id == JobPartRow.job_id)
    .where(JobRow.state.in_(_ACTIVE), JobPartRow.attempt == JobRow.attempt, JobPartRow.part > 0,
           JobPartRow.state.in_(_ACTIVE)).group_by(JobPartRow.node))


def node_infos(
    session: Session, *, now: datetime | None = None, ttl_s: float, include_offline: bool = False
) -> list[NodeInfo]:
    """Every live node (and the dead ones if asked) with GPUs and GPU holders, by name.

    Live: online, and seen within ``ttl_s`` unless no node at all has been
    (overlay/liveness.py ``silence_cutoff``: then beat is away, not the fleet).
    """
    now = resolve_now(session, now)
    conn = session.connection()
    rows = conn.execute(NODES if include_offline else ONLINE_NODES).all()
    # The freshest heartbeat of an online node, from the rows read (one statement less).
    seen = [n.last_seen for n in rows if n.state == NodeState.ONLINE.value and n.last_seen is not None]
    freshest = max(seen, default=None)
    cutoff = silence_cutoff(now, freshest_seen=freshest, ttl_s=ttl_s)
    nodes = [n for n in rows if include_offline or cutoff is None or n.last_seen >= cutoff]
    gpus: dict[str, list[GpuDevice]] = defaultdict(list)
    for g in conn.execute(GPUS):
        gpus[g.node].append(GpuDevice(index=g.gpu_index, **{f: getattr(g, f) for f in GPU_FIELDS}))
    holders: dict[str, dict[int, str]] = defaultdict(dict)
    for node, index, job_id in conn.execute(HOLDERS):
        holders[node][index] = job_id
    running: dict[str, int] = defaultdict(int)
    for node, count in conn.execute(RUNNING):
        running[node] += count
    return [_info(n, gpus[n.name], holders[n.name], cutoff, running.get(n.name, 0)) for n in nodes]


def _info(
    row: Any, gpus: list[GpuDevice], holders: dict[int, str], cutoff: datetime | None, running: int
) -> NodeInfo:
    if row.state != NodeState.ONLINE.value or (cutoff is not None and row.last_seen < cutoff):
        state = NodeState.OFFLINE
    else:
        state = NodeState.DRAINING if row.draining else NodeState.ONLINE
        if (row.agent_health or {}).get("stopping"):
            state = NodeState.STOPPING
    snapshot = NodeSnapshot(
        name=row.name, gpus=tuple(gpus), labels=dict(row.labels), state=state,
        taken=frozenset(holders), slots=_slots(row.agent_health), running=running,
    )
    return NodeInfo(
        snapshot=snapshot, hostname=row.hostname, agent_health=dict(row.agent_health),
        last_seen=row.last_seen, holders=dict(holders),
    )


def _slots(agent_health: dict[str, Any]) -> int | None:
    """The job slots the agent reports (workers/heartbeat.py ``job_slots``); None: no limit."""
    slots = agent_health.get("job_slots")
    return slots if isinstance(slots, int) and slots >= 0 else None


def _gpu_values(g: GpuDevice) -> dict[str, Any]:
    return {f: getattr(g, f) for f in GPU_FIELDS}
