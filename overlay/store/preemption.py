"""What a pass's preemption reads and writes (overlay/preemption.py decides): the running
jobs as candidates, with the work each would lose, and a victim sent back to the queue."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from overlay.model import Job
from overlay.preemption import Candidate
from overlay.states import JobState
from overlay.store import counters
from overlay.store.jobs import _move, _stale, get_job
from overlay.store.session import resolve_now
from overlay.store.tables import JobRow


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


def preempt(session: Session, job_id: str, *, attempt: int, by: str, now: datetime | None = None) -> Job:
    """RUNNING -> QUEUED: the attempt is preempted for the job ``by``. It keeps its GPUs
    until its agent has stopped it (SIGTERM, the grace time, the kill: then ``finish`` finds
    the attempt superseded and frees them); meanwhile the job is not placed again
    (overlay/store/holds.py). The attempt counts in ``attempt`` but not against max_retries.

    Raises StaleAttempt (the attempt ended or moved on since it was read), JobNotFound.
    """
    row = get_job(session, job_id, lock=True)
    if (row.state, row.attempt) != (JobState.RUNNING, attempt) or not row.preemptible:
        raise _stale(row, attempt)
    now = resolve_now(session, now)
    row.preemptions += 1
    row.preempted_by, row.preempted_at = by, now
    counters.bump(session, "preemptions")
    return _move(session, row, JobState.QUEUED, now=now, reason=f"preempted by {by}", keep_gpus=True)
