"""The jobs that hold GPUs now, as backfill sees them: node, GPU indices and latest end."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from overlay.reservation import Running, ends_at
from overlay.states import JobState
from overlay.store.tables import JobPartRow, JobRow

HOLDING = (JobState.PLACED.value, JobState.RUNNING.value)


# The jobs holding GPUs, and a gang job's parts beyond rank 0 (whose node and GPUs are the
# job row's): one round trip for both, built once (a pass reads this every time).
RUNNING = union_all(
    select(JobRow.node, JobRow.gpu_indices, JobRow.started_at, JobRow.timeout_s)
    .where(JobRow.state.in_(HOLDING), JobRow.node.is_not(None)),
    select(JobPartRow.node, JobPartRow.gpu_indices, JobRow.started_at, JobRow.timeout_s)
    .join(JobRow, JobRow.job_id == JobPartRow.job_id)
    .where(JobRow.state.in_(HOLDING), JobPartRow.attempt == JobRow.attempt, JobPartRow.part > 0,
           JobPartRow.state.in_(HOLDING)))


def running_jobs(session: Session, *, now: datetime) -> list[Running]:
    """Every PLACED or RUNNING job with its node, GPUs and latest end: start + ``timeout_s``,
    from ``now`` for a job not started yet (its timeout starts with it), None without one."""
    return [Running(node=node, gpus=tuple(gpus), ends_at=ends_at(started or now, timeout_s))
            for node, gpus, started, timeout_s in session.connection().execute(RUNNING)]
