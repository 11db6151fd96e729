"""What a pass's preemption reads (overlay/preemption.py decides): the running jobs as
candidates, with the work each would lose, and the preempted attempts still stopping."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from overlay.preemption import Candidate, Stopping
from overlay.states import JobState
from overlay.store.tables import GpuAllocationRow, JobRow


def candidates(session: Session, *, now: datetime) -> list[Candidate]:
    """Every RUNNING one-node job holding GPUs, preemptible or not (the plan judges), with the
    GPU-seconds it has run this attempt. Gang jobs are never victims: stopping one frees
    GPUs on several nodes, which the plan (one node per preemptor) does not weigh."""
    rows = session.execute(
        select(JobRow.job_id, JobRow.attempt, JobRow.node, JobRow.gpu_indices, JobRow.priority,
               JobRow.borrowed, JobRow.preemptible, JobRow.account, JobRow.started_at)
        .where(JobRow.state == JobState.RUNNING, JobRow.node.is_not(None), JobRow.nodes == 1))
    return [Candidate(job_id=job_id, attempt=attempt, node=node, gpus=tuple(gpus), priority=priority,
                      borrowed=borrowed, preemptible=preemptible, account=account,
                      gpu_seconds=len(gpus) * max((now - (started or now)).total_seconds(), 0.0))
            for job_id, attempt, node, gpus, priority, borrowed, preemptible, account, started in rows
            if gpus]


def stopping(session: Session, job_ids: Iterable[str]) -> list[Stopping]:
    """Of ``job_ids``, the preempted attempts that still hold their GPUs (their agents are
    stopping them)."""
    ids = list(job_ids)
    if not ids:
        return []
    rows = session.execute(
        select(JobRow.job_id, JobRow.preempted_by, GpuAllocationRow.node, GpuAllocationRow.gpu_index)
        .join(GpuAllocationRow, (GpuAllocationRow.job_id == JobRow.job_id)
              & (GpuAllocationRow.attempt == JobRow.attempt))
        .where(JobRow.job_id.in_(ids), JobRow.state == JobState.QUEUED, JobRow.preempted_by.is_not(None))
        .order_by(JobRow.job_id, GpuAllocationRow.gpu_index))
    found: dict[str, tuple[str, str, list[int]]] = {}
    for job_id, by, node, index in rows:
        found.setdefault(job_id, (by, node, []))[2].append(index)
    return [Stopping(job_id=job_id, node=node, gpus=tuple(gpus), for_job=by)
            for job_id, (by, node, gpus) in found.items()]
