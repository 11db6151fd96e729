"""A gang job's parts as the job's own transitions write them: recorded when it is placed
(with where they meet) and ended when it ends before they started. overlay/store/gangs.py
runs and ends the parts; this module is what overlay/store/jobs.py needs of them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from overlay.gang import pick_port
from overlay.model import GangPlacement
from overlay.states import JobState
from overlay.store import usage
from overlay.store.tables import JobPartRow, JobRow, NodeRow


def record(session: Session, row: JobRow, gang: GangPlacement, *, ports: tuple[int, int]) -> None:
    """A gang's parts for its next attempt, and where they meet: rank 0's address as its
    agent reports it, and a port of ``ports`` no other gang with its rank 0 on that node uses now."""
    attempt = row.attempt + 1
    session.execute(delete(JobPartRow).where(JobPartRow.job_id == row.job_id))
    session.execute(insert(JobPartRow), [
        dict(job_id=row.job_id, part=rank, attempt=attempt, node=p.node, gpu_indices=list(p.gpus),
             state=JobState.PLACED.value, log_tail="") for rank, p in enumerate(gang.parts)])
    node = session.execute(select(NodeRow.hostname, NodeRow.agent_health)
                           .where(NodeRow.name == gang.node)).one_or_none()
    health = (node[1] or {}) if node else {}
    row.master_addr = str(health.get("address") or (node[0] if node else "") or gang.node)
    taken = session.scalars(select(JobRow.master_port).where(
        JobRow.node == gang.node, JobRow.state.in_([JobState.PLACED, JobState.RUNNING]),
        JobRow.master_port.is_not(None), JobRow.job_id != row.job_id)).all()
    row.master_port = pick_port(row.job_id, attempt, taken={t for t in taken if t is not None},
                                low=ports[0], high=ports[1])


def end_unstarted(session: Session, row: JobRow, *, now: datetime | None) -> None:
    """A gang job ended (or went back to the queue): its parts that never started never
    will; they end CANCELLED and their GPUs are freed now (a running part's agent frees its own)."""
    if row.nodes <= 1:
        return
    unstarted = session.scalars(select(JobPartRow).where(
        JobPartRow.job_id == row.job_id, JobPartRow.attempt == row.attempt,
        JobPartRow.state == JobState.PLACED.value))
    for part in unstarted:
        part.state, part.reason, part.finished_at = JobState.CANCELLED.value, "never started", now
        usage.release(session, row.job_id, attempt=row.attempt, node=part.node, now=now)
