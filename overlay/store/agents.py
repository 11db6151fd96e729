"""What an agent asks of Postgres about its own node between heartbeats: renew its lease,
say it is stopping, and read the current attempt of the jobs its supervisors run."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from overlay.model import NodeState
from overlay.states import JobState
from overlay.store.tables import JobRow, NodeRow


def renew_lease(session: Session, node: str) -> bool:
    """Record ``node`` as seen now (Postgres's clock) if it is online; whether it is.

    The agent renews its supervisors' leases only when this returns True: a node that
    reconcile has declared offline (its jobs given away) gets no renewal until its
    next heartbeat registers it again, so its supervisors stop what they run.
    """
    renewed = session.execute(
        update(NodeRow)
        .where(NodeRow.name == node, NodeRow.state == NodeState.ONLINE.value)
        .values(last_seen=func.now())
        .returning(NodeRow.name)
    )
    return renewed.scalar_one_or_none() is not None


def mark_stopping(session: Session, node: str) -> None:
    """Say in the node's agent_health that its agent is stopping: placement passes it over
    and /api/nodes shows it ``stopping``, until the next agent's first heartbeat."""
    session.execute(
        update(NodeRow)
        .where(NodeRow.name == node)
        .values(agent_health=NodeRow.agent_health.op("||")(func.jsonb_build_object("stopping", True)))
    )


def current_attempts(session: Session, job_ids: Iterable[str]) -> dict[str, tuple[JobState, int]]:
    """State and current attempt of each of ``job_ids`` that exists."""
    ids = list(set(job_ids))
    if not ids:
        return {}
    rows = session.execute(select(JobRow.job_id, JobRow.state, JobRow.attempt).where(JobRow.job_id.in_(ids)))
    return {job_id: (state, attempt) for job_id, state, attempt in rows}


def preempted_for(session: Session, job_ids: Iterable[str]) -> dict[str, str]:
    """Of ``job_ids``, those QUEUED by a preemption: job -> the job it was preempted for."""
    ids = list(set(job_ids))
    if not ids:
        return {}
    rows = session.execute(select(JobRow.job_id, JobRow.preempted_by)
                           .where(JobRow.job_id.in_(ids), JobRow.preempted_by.is_not(None)))
    return {job_id: by for job_id, by in rows}
