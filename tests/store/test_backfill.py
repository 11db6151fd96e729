"""Backfill with a reservation on real Postgres: schedule_pass reads the running jobs' ends,
so a node-sized job is not starved by a stream of 1-GPU jobs, and short jobs still go first."""

from __future__ import annotations

from datetime import datetime

from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import moves
from overlay.store.running import running_jobs
from tests.store.world import T0, seconds
from workers.scheduler import schedule_pass


def finish(cluster, job_id: str, *, at: datetime) -> None:
    """The job's agent reports it DONE (the GPUs are free again)."""
    with cluster.sessions.begin() as s:
        moves.finish(s, job_id, attempt=cluster.job(job_id).attempt, target=JobState.DONE, now=at,
                         reason=None, ending=job_store.Ending(exit_code=0, log_tail=""))


def step(cluster, settings, started: list[str], *, at: datetime) -> list[str]:
    """A heartbeat, the jobs whose timeout has come end, a pass, and what it placed starts."""
    cluster.heartbeat("node-a", at=at)
    for job_id in list(started):
        job = cluster.job(job_id)
        if job.started_at is not None and job.spec.timeout_s is not None \
                and job.started_at + seconds(job.spec.timeout_s) <= at:
            finish(cluster, job_id, at=at)
            started.remove(job_id)
    placed = [m.job_id for m in schedule_pass(cluster.sessions, settings, now=at).runs]
    for job_id in placed:
        cluster.start(job_id, at=at)
        started.append(job_id)
    return placed


def test_running_jobs_come_with_their_latest_end(cluster):
    # Given a job running with a timeout, one without, and one placed but not started
    cluster.node("node-a", gpus=4)
    cluster.running("bounded", on="node-a", gpus=(0,), at=T0, timeout_s=600)
    cluster.running("unbounded", on="node-a", gpus=(1,), at=T0)
    cluster.submit("placed", gpus=1, timeout_s=60, at=T0)
    cluster.place("placed", on="node-a", gpus=(2,), at=T0)
    # When the store lists them
    with cluster.sessions() as s:
        found = {r.gpus: r.ends_at for r in running_jobs(s, now=T0 + seconds(30))}
    # Then each ends at its start plus timeout, never, or its timeout from now
    assert found == {(0,): T0 + seconds(600), (1,): None, (2,): T0 + seconds(90)}


def test_a_node_sized_job_is_not_starved_by_a_stream_of_one_gpu_jobs(cluster, settings):
    # Given node-a's 4 GPUs running 1-GPU jobs that time out at +120, +180, +240 and +300 s
    cluster.node("node-a", gpus=4)
    started: list[str] = []
    for i in range(4):
        cluster.submit(f"first-{i}", gpus=1, timeout_s=120 + 60 * i, at=T0)
    assert len(step(cluster, settings, started, at=T0)) == 4
    # and a 4-GPU job queued behind them
    cluster.submit("big", gpus=4, timeout_s=3600, at=T0 + seconds(10))
    # When a 1-GPU job of 10 minutes arrives every minute, and one of a minute at +120 s
    placed_at: dict[str, datetime] = {}
    for minute in range(1, 9):
        at = T0 + seconds(60 * minute)
        cluster.submit(f"stream-{minute}", gpus=1, timeout_s=600, at=at)
        if minute == 2:
            cluster.submit("quick", gpus=1, timeout_s=60, at=at)
        placed_at.update({job_id: at for job_id in step(cluster, settings, started, at=at)})
        if minute == 1:
            # Then the big job is reserved from when the running jobs' timeouts free node-a
            assert cluster.job("big").reason == ("needs 4 GPUs; most free on one node: 0; "
                                                 "reserved node-a from 2026-01-05T12:05:00Z")
    # Then the short job backfilled onto the GPU freed at +120 s, ending before the reservation
    assert placed_at["quick"] == T0 + seconds(120)
    # and the big job started when the last of the first jobs timed out, ahead of the stream
    assert placed_at["big"] == T0 + seconds(300)
    early = [job_id for job_id, at in placed_at.items() if at < T0 + seconds(300)]
    assert not [job_id for job_id in early if job_id.startswith("stream-")]
    assert cluster.job("big").state is JobState.RUNNING


def test_without_timeouts_there_is_no_reservation_and_small_jobs_go_first_as_before(cluster, settings):
    # Given node-a with one GPU free and three held by a job without timeout
    cluster.node("node-a", gpus=4)
    cluster.heartbeat("node-a", at=T0)
    cluster.running("forever", on="node-a", gpus=(0, 1, 2), at=T0)
    cluster.submit("big", gpus=4, at=T0 + seconds(1))
    cluster.submit("small", gpus=1, at=T0 + seconds(2))
    # When a pass runs
    placed = [m.job_id for m in schedule_pass(cluster.sessions, settings, now=T0 + seconds(3)).runs]
    # Then the small job takes the free GPU, and the big one's reason promises nothing
    assert placed == ["small"]
    assert cluster.job("big").reason == "needs 4 GPUs; most free on one node: 1"
