"""Retention: finished jobs past RETENTION_DAYS go, with their events, GPU rows and log files,
a bounded batch at a time; anything not ended, or ended recently, stays."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import func, select

from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import retention as retention_store
from overlay.store.tables import GpuAllocationRow, JobEventRow, JobRow
from tests.store.world import T0, Cluster, seconds
from workers.housekeeping import housekeeping

DAY = 86400


def ended(cluster: Cluster, job_id: str, state: JobState, *, at) -> None:
    """``job_id`` ran on node-a and ended in ``state`` at ``at``."""
    cluster.running(job_id, on="node-a", at=at - seconds(60))
    with cluster.sessions.begin() as s:
        job_store.transition(s, job_id, state, now=at, reason="test")


def jobs_left(cluster: Cluster) -> set[str]:
    with cluster.sessions() as s:
        return set(s.scalars(select(JobRow.job_id)))


def count(cluster: Cluster, row, job_id: str) -> int:
    with cluster.sessions() as s:
        return s.scalar(select(func.count()).select_from(row).where(row.job_id == job_id)) or 0


def history(cluster: Cluster) -> None:
    """Jobs ended 40, 35 and 10 days before T0 + 60 days (DONE, FAILED, CANCELLED), one
    running for 50 days, one queued for 50 days."""
    cluster.node("node-a", gpus=4)
    now = T0 + seconds(60 * DAY)
    ended(cluster, "old-done", JobState.DONE, at=now - seconds(40 * DAY))
    ended(cluster, "old-failed", JobState.FAILED, at=now - seconds(35 * DAY))
    ended(cluster, "recent", JobState.DONE, at=now - seconds(10 * DAY))
    cluster.running("long-running", on="node-a", gpus=(1,), at=now - seconds(50 * DAY))
    cluster.submit("long-queued", at=now - seconds(50 * DAY))
    cluster.submit("old-cancelled", at=now - seconds(50 * DAY))
    cluster.cancel("old-cancelled", at=now - seconds(45 * DAY))


NOW = T0 + seconds(60 * DAY)


def test_only_jobs_ended_before_the_cutoff_are_deleted_with_their_events(cluster):
    history(cluster)
    assert count(cluster, JobEventRow, "old-done") == 4
    with cluster.sessions.begin() as s:
        deleted = retention_store.delete_finished_before(s, cutoff=NOW - seconds(30 * DAY), limit=100)
    # What has not ended stays, however old
    assert sorted(deleted) == ["old-cancelled", "old-done", "old-failed"]
    assert jobs_left(cluster) == {"recent", "long-running", "long-queued"}
    assert count(cluster, JobEventRow, "old-done") == 0
    assert count(cluster, JobEventRow, "long-running") == 3


def test_a_batch_is_bounded_and_the_next_one_takes_the_rest(cluster):
    history(cluster)
    cutoff = NOW - seconds(30 * DAY)
    # The two that ended first go first
    with cluster.sessions.begin() as s:
        first = retention_store.delete_finished_before(s, cutoff=cutoff, limit=2)
    assert sorted(first) == ["old-cancelled", "old-done"]
    with cluster.sessions.begin() as s:
        assert retention_store.delete_finished_before(s, cutoff=cutoff, limit=2) == ["old-failed"]
    with cluster.sessions.begin() as s:
        assert retention_store.delete_finished_before(s, cutoff=cutoff, limit=2) == []


def test_a_job_locked_by_another_transaction_is_left_for_a_later_batch(cluster):
    history(cluster)
    cutoff = NOW - seconds(30 * DAY)
    # Given another transaction holding old-done's row (an admin move, a late end record)
    with cluster.sessions() as other:
        job_store.get_job(other, "old-done", lock=True)
        # When a batch runs meanwhile, it neither waits for it nor deletes it
        with cluster.sessions.begin() as s:
            assert "old-done" not in retention_store.delete_finished_before(s, cutoff=cutoff, limit=100)
        other.rollback()
    # Then the next batch takes it
    with cluster.sessions.begin() as s:
        assert retention_store.delete_finished_before(s, cutoff=cutoff, limit=100) == ["old-done"]


def test_deleting_a_job_frees_rows_that_still_name_it(cluster):
    # Given a cancelled job whose agent never came back to free its GPU
    cluster.node("node-a", gpus=4)
    cluster.running("stuck", on="node-a", gpus=(2,), at=T0)
    cluster.cancel("stuck", at=T0 + seconds(1))
    assert count(cluster, GpuAllocationRow, "stuck") == 1
    # When retention deletes it, no allocation row outlives it
    with cluster.sessions.begin() as s:
        assert retention_store.delete_finished_before(s, cutoff=T0 + seconds(2 * DAY), limit=10) == ["stuck"]
    assert count(cluster, GpuAllocationRow, "stuck") == 0


def test_the_beat_task_deletes_expired_jobs_and_their_log_files(cluster, settings, tmp_path):
    # Given RETENTION_DAYS=30, and log files of an expired job, a recent one, and none for another
    history(cluster)
    settings = replace(settings, retention_days=30, retention_batch=1000, log_dir=str(tmp_path / "logs"))
    logs = tmp_path / "logs"
    logs.mkdir()
    for job_id in ("old-done", "recent", "long-running"):
        (logs / f"{job_id}.log").write_text("output\n")
    # When the housekeeping task's function runs (as beat's tick would)
    swept = housekeeping(cluster.sessions, settings, now=NOW)
    # Then the expired jobs and the log file it found are gone; the rest stays
    assert set(swept.deleted) == {"old-done", "old-failed", "old-cancelled"}
    assert swept.logs_removed == 1
    assert sorted(p.name for p in logs.iterdir()) == ["long-running.log", "recent.log"]
    assert jobs_left(cluster) == {"recent", "long-running", "long-queued"}
    # And a second tick finds nothing more
    assert housekeeping(cluster.sessions, settings, now=NOW).deleted == ()


def test_the_default_keeps_every_job_for_ever(cluster, settings):
    history(cluster)
    assert settings.retention_days == 0
    assert housekeeping(cluster.sessions, settings, now=NOW + seconds(10_000 * DAY)).deleted == ()
    assert len(jobs_left(cluster)) == 6
