"""Deleting finished jobs past retention, a bounded batch per call (their events and GPU rows go
with them by ON DELETE CASCADE)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from overlay.states import JobState
from overlay.store.tables import JobRow

TERMINAL = [s for s in JobState if s.terminal]


def delete_finished_before(session: Session, *, cutoff: datetime, limit: int) -> list[str]:
    """Delete at most ``limit`` jobs that ended before ``cutoff``, oldest first; their ids.

    The batch is found through ix_jobs_finished_at and locked SKIP LOCKED, so a job that
    another transaction is touching (an admin move, a late end record) is left for the
    next batch, and a batch's locks are few and short whatever the backlog.
    """
    batch = (
        select(JobRow.job_id)
        .where(JobRow.finished_at < cutoff, JobRow.state.in_(TERMINAL))
        .order_by(JobRow.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    deleted = session.scalars(
        delete(JobRow).where(JobRow.job_id.in_(batch)).returning(JobRow.job_id)
        .execution_options(synchronize_session=False)
    )
    return list(deleted)
