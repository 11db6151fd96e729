"""An attempt that is no longer the job's changes nothing (StaleAttempt), a cancel racing
the agent's start leaves the job CANCELLED, and GPUs a dead agent never freed are freed."""

from __future__ import annotations

import pytest

from overlay.errors import StaleAttempt
from overlay.states import JobState
from overlay.store import gangs, moves
from overlay.store import jobs as job_store
from tests.store.world import T0, race, seconds
from workers.scheduler import STRAY_GRACE_S


def finish(cluster, job_id, *, attempt, at, exit_code=0):
    with cluster.sessions.begin() as s:
        return moves.finish(s, job_id, attempt=attempt, target=JobState.DONE, now=at, reason=None,
                            ending=job_store.Ending(exit_code=exit_code, log_tail="bye\n"))


def requeue(cluster, job_id, *, at, reason="node lost (node-a); retry 1 of 1"):
    with cluster.sessions.begin() as s:
        return job_store.transition(s, job_id, JobState.QUEUED, now=at, reason=reason,
                                    attempt=cluster.job(job_id).attempt)


def test_a_finish_for_an_old_attempt_raises_stale_attempt_and_changes_nothing(cluster):
    # Given a job whose attempt 1 on node-a was given up, and whose attempt 2 runs on node-b
    cluster.node("node-a", gpus=1)
    cluster.node("node-b", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,), max_retries=1)
    requeue(cluster, "j", at=T0 + seconds(20))
    cluster.place("j", on="node-b", gpus=(0,), at=T0 + seconds(21))
    cluster.start("j", at=T0 + seconds(22))
    before = (cluster.job("j"), cluster.events("j"), cluster.holders("node-b"))
    # When attempt 1's agent comes back and reports its end
    with pytest.raises(StaleAttempt) as stale:
        finish(cluster, "j", attempt=1, at=T0 + seconds(30))
    # Then nothing changed: attempt 2 still runs on node-b, holding its GPU
    assert (stale.value.attempt, stale.value.current) == (1, 2)
    assert (cluster.job("j"), cluster.events("j"), cluster.holders("node-b")) == before
    assert cluster.job("j").state is JobState.RUNNING


def test_a_start_for_an_old_attempt_raises_stale_attempt_and_changes_nothing(cluster):
    # Given a job re-placed as attempt 2 after attempt 1 was placed and given up
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1, max_retries=1)
    cluster.place("j", on="node-a", gpus=(0,))
    requeue(cluster, "j", at=T0 + seconds(1))
    cluster.place("j", on="node-a", gpus=(0,), at=T0 + seconds(2))
    # When a late run_job for attempt 1 arrives
    with pytest.raises(StaleAttempt), cluster.sessions.begin() as s:
        gangs.start(s, "j", attempt=1, part=0, node="node-a", now=T0 + seconds(3))
    # Then attempt 2 is still PLACED, waiting for its own message
    assert (cluster.job("j").state, cluster.job("j").attempt) == (JobState.PLACED, 2)


def test_a_job_cancelled_before_its_agent_starts_it_is_never_started(cluster):
    # Given a placed job, cancelled before its run_job reached the agent
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cluster.place("j", on="node-a", gpus=(0,))
    cluster.cancel("j", at=T0 + seconds(1))
    # When the agent tries to start it
    with pytest.raises(StaleAttempt), cluster.sessions.begin() as s:
        gangs.start(s, "j", attempt=1, part=0, node="node-a", now=T0 + seconds(2))
    # Then it stays CANCELLED, and its GPU is free (nothing of it runs)
    assert cluster.job("j").state is JobState.CANCELLED
    assert cluster.holders("node-a") == {}


def test_a_cancel_racing_the_agents_start_leaves_the_job_cancelled_whichever_commits_first(cluster):
    # Given a placed job
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cluster.place("j", on="node-a", gpus=(0,))

    def start():
        with cluster.sessions.begin() as s:
            return gangs.start(s, "j", attempt=1, part=0, node="node-a", now=T0 + seconds(1))

    # When the user's cancel and the agent's start run at the same moment
    started, cancelled = race(start, lambda: cluster.cancel("j", at=T0 + seconds(1)))
    # Then the cancel always lands, and the job ends CANCELLED
    assert not isinstance(cancelled, Exception), cancelled
    assert cluster.job("j").state is JobState.CANCELLED
    states = [state for state, _, _ in cluster.events("j")]
    if isinstance(started, StaleAttempt):
        # cancel first: the start changed nothing, and the GPU is free
        assert states == ["QUEUED", "PLACED", "CANCELLED"]
        assert cluster.holders("node-a") == {}
    else:
        # start first: the GPU stays held until the agent has killed the job
        assert states == ["QUEUED", "PLACED", "RUNNING", "CANCELLED"]
        assert cluster.holders("node-a") == {0: ("j", 1)}


def test_stray_gpus_of_an_ended_attempt_are_freed_only_after_the_grace_period(cluster):
    # Given a running job cancelled at T0+10 whose agent died before it could free the GPU
    cluster.node("node-a", gpus=2)
    cluster.running("gone", on="node-a", gpus=(0,))
    cluster.cancel("gone", at=T0 + seconds(10))
    # and another job still running
    cluster.running("alive", on="node-a", gpus=(1,))
    assert cluster.holders("node-a") == {0: ("gone", 1), 1: ("alive", 1)}

    def release(at):
        with cluster.sessions.begin() as s:
            return job_store.release_stray_allocations(s, before=at - seconds(STRAY_GRACE_S))

    # When reconcile looks within the grace period (the agent may still be killing it)
    # Then nothing is freed
    assert release(T0 + seconds(10 + STRAY_GRACE_S - 1)) == 0
    assert set(cluster.holders("node-a")) == {0, 1}
    # When it looks after the grace period
    # Then the cancelled job's GPU is free, and the running job keeps its own
    assert release(T0 + seconds(10 + STRAY_GRACE_S + 1)) == 1
    assert cluster.holders("node-a") == {1: ("alive", 1)}


def test_stray_gpus_of_a_superseded_attempt_are_freed_and_the_new_attempts_are_kept(cluster):
    # Given attempt 1 given up on node-a while its allocation was left behind (as a
    # cancel leaves a running job's), and attempt 2 running on node-b
    cluster.node("node-a", gpus=1)
    cluster.node("node-b", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,), max_retries=1)
    with cluster.sessions.begin() as s:
        job_store.transition(s, "j", JobState.QUEUED, now=T0 + seconds(1), reason="retry",
                             attempt=1, keep_gpus=True)
    cluster.place("j", on="node-b", gpus=(0,), at=T0 + seconds(2))
    # When reconcile frees strays past the grace period
    with cluster.sessions.begin() as s:
        freed = job_store.release_stray_allocations(s, before=T0 + seconds(STRAY_GRACE_S + 5))
    # Then attempt 1's GPU on node-a is free, and attempt 2 keeps node-b's
    assert freed == 1
    assert cluster.holders("node-a") == {}
    assert cluster.holders("node-b") == {0: ("j", 2)}


def test_an_attempts_end_is_recorded_with_its_reason_exit_code_and_time_and_frees_its_gpus(cluster):
    # Given a job running on node-a's GPU 0
    cluster.node("node-a", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,))
    # When its agent records that it failed with exit code 3
    with cluster.sessions.begin() as s:
        ended = moves.finish(s, "j", attempt=1, target=JobState.FAILED, now=T0 + seconds(5),
                             reason="exit code 3", ending=job_store.Ending(exit_code=3, log_tail="boom\n"))
    # Then the job, its last event and its GPU all say so
    job = cluster.job("j")
    assert (job.state, job.reason, job.exit_code, job.finished_at) == (
        JobState.FAILED, "exit code 3", 3, T0 + seconds(5))
    assert ended == job
    assert cluster.events("j")[-1] == ("FAILED", 1, "exit code 3")
    assert cluster.holders("node-a") == {}
    with cluster.sessions.begin() as s:
        assert job_store.log_tail(s, "j") == "boom\n"


def test_the_end_of_an_attempt_cancelled_while_it_ran_adds_its_exit_code_and_frees_its_gpus(cluster):
    # Given a running job cancelled by its user (CANCELLED, its GPU held until its agent stops it)
    cluster.node("node-a", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,))
    cluster.cancel("j", at=T0 + seconds(2))
    events = cluster.events("j")
    assert cluster.holders("node-a") != {}
    # When its agent records the killed attempt's end
    with cluster.sessions.begin() as s:
        moves.finish(s, "j", attempt=1, target=JobState.CANCELLED, now=T0 + seconds(3), reason="cancelled",
                     ending=job_store.Ending(exit_code=-15, log_tail="killed\n"))
    # Then the job stays CANCELLED as the cancel left it, with the exit code, and no new event
    job = cluster.job("j")
    assert (job.state, job.exit_code) == (JobState.CANCELLED, -15)
    assert cluster.events("j") == events
    assert cluster.holders("node-a") == {}
