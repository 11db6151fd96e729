"""Which finished jobs are old enough to delete (RETENTION_DAYS). Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from overlay.model import Job


def retention_cutoff(*, now: datetime, retention_days: float) -> datetime | None:
    """Jobs that finished before this moment may go; None when every job is kept for ever (0 days)."""
    if retention_days <= 0:
        return None
    return now - timedelta(days=retention_days)


def expired(job: Job, *, cutoff: datetime | None) -> bool:
    """Whether ``job`` is past retention: ended (DONE, FAILED, CANCELLED) before ``cutoff``.

    A job still queued, placed or running is never expired, however old.
    """
    return (cutoff is not None and job.state.terminal and job.finished_at is not None
            and job.finished_at < cutoff)
