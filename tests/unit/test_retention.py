"""Retention's decision: which finished jobs are old enough to delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from overlay.model import Job, JobSpec
from overlay.retention import expired, retention_cutoff
from overlay.states import JobState

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def job(state: JobState, *, finished_days_ago: float | None) -> Job:
    finished = NOW - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
    return Job(spec=JobSpec(job_id="j", cmd=("true",)), state=state, enqueued_at=NOW - timedelta(days=400),
               finished_at=finished)


def test_zero_days_keeps_every_job_for_ever():
    cutoff = retention_cutoff(now=NOW, retention_days=0)
    assert cutoff is None
    assert not expired(job(JobState.DONE, finished_days_ago=10_000), cutoff=cutoff)


def test_a_job_that_ended_before_the_cutoff_expires_and_one_after_it_stays():
    cutoff = retention_cutoff(now=NOW, retention_days=30)
    assert cutoff == NOW - timedelta(days=30)
    for state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        assert expired(job(state, finished_days_ago=30.01), cutoff=cutoff)
        assert not expired(job(state, finished_days_ago=29.99), cutoff=cutoff)


def test_a_job_not_ended_never_expires_however_old():
    cutoff = retention_cutoff(now=NOW, retention_days=1)
    for state in (JobState.QUEUED, JobState.PLACED, JobState.RUNNING):
        assert not expired(job(state, finished_days_ago=None), cutoff=cutoff)
        # A stale finished_at from an earlier attempt does not count while it runs again
        assert not expired(job(state, finished_days_ago=100), cutoff=cutoff)
