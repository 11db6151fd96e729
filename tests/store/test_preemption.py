"""Preemption, store tier: a pass stops the running jobs that let a waiting one run (least
lost work first), records it on both jobs, holds the victim until its attempt has stopped,
then places the waiting job; the victim runs again without using up max_retries. Real
Postgres, no processes, a fixed clock."""

from __future__ import annotations

from dataclasses import replace

import pytest

from overlay.config import Settings
from overlay.errors import StaleAttempt
from overlay.states import JobState
from overlay.store import accounts, moves, stats
from overlay.store import jobs as job_store
from tests.store.world import T0, Cluster, seconds
from workers.scheduler import PreemptMessage, reconcile, schedule_pass


@pytest.fixture
def on(settings: Settings) -> Settings:
    return replace(settings, preemption="on", preempt_priority_gap=10, preempt_grace_s=30.0)


def run(cluster: Cluster, job_id: str, *, on: str, indices: tuple[int, ...], at=T0, **spec) -> None:
    """A job of ``len(indices)`` GPUs submitted, placed on them and started at ``at``."""
    cluster.submit(job_id, at=at, gpus=len(indices), **spec)
    cluster.place(job_id, on=on, gpus=indices, at=at)
    cluster.start(job_id, at=at)


def stopped(cluster: Cluster, job_id: str, attempt: int, *, at) -> None:
    """The victim's agent saw its attempt end: the end is not the job's any more (it is
    QUEUED), so it frees the attempt's GPUs, as workers/execution.py record_end does."""
    with cluster.sessions.begin() as s, pytest.raises(StaleAttempt):
        moves.finish(s, job_id, attempt=attempt, target=JobState.FAILED, now=at, reason="preempted",
                         ending=job_store.Ending(exit_code=143, log_tail=""))
    with cluster.sessions.begin() as s:
        job_store.release_gpus(s, job_id, attempt=attempt, now=at)


def test_a_waiting_job_preempts_the_lower_priority_job_that_lost_least_work(cluster, on):
    # Given a full 4-GPU node: "early" on GPUs 0-1 since T0, "late" on GPUs 2-3 since T0+50s
    cluster.node("n1", gpus=4)
    run(cluster, "early", on="n1", indices=(0, 1), at=T0)
    run(cluster, "late", on="n1", indices=(2, 3), at=T0 + seconds(50))
    cluster.submit("urgent", gpus=2, priority=50, at=T0 + seconds(60))
    # When a pass runs at T0+100s
    result = schedule_pass(cluster.sessions, on, now=T0 + seconds(100))
    # Then "late" (100 GPU-seconds run, against early's 200) is preempted for "urgent"
    assert result.runs == []
    assert result.preempts == [PreemptMessage(job_id="late", attempt=1, node="n1",
                                              reason="preempted by urgent", grace_s=30.0)]
    late = cluster.job("late")
    assert (late.state, late.reason, late.preemptions, late.preempted_by) == (
        JobState.QUEUED, "preempted by urgent", 1, "urgent")
    assert cluster.job("early").state is JobState.RUNNING
    # And it keeps its GPUs while it stops (SIGTERM, grace, kill)
    assert cluster.holders("n1")[2] == ("late", 1)
    # And both jobs say so in their events, and the counter counts it
    assert cluster.events("late")[-1] == ("QUEUED", 1, "preempted by urgent")
    assert cluster.events("urgent")[-1] == ("QUEUED", 0, "preempting late on n1")
    assert "preempting late on n1" in (cluster.job("urgent").reason or "")
    with cluster.sessions() as s:
        assert stats.counters(s).preemptions() == 1


def test_while_the_victim_stops_nothing_more_is_preempted_and_the_victim_is_not_placed(cluster, on):
    cluster.node("n1", gpus=2)
    cluster.node("n2", gpus=2)
    run(cluster, "a", on="n1", indices=(0, 1), at=T0)
    run(cluster, "b", on="n2", indices=(0, 1), at=T0)
    cluster.submit("urgent", gpus=2, priority=50, at=T0 + seconds(1))
    first = schedule_pass(cluster.sessions, on, now=T0 + seconds(10))
    assert [m.job_id for m in first.preempts] == ["a"]
    # When passes run while "a" is still stopping
    again = schedule_pass(cluster.sessions, on, now=T0 + seconds(11))
    # Then "urgent" waits for its victim, "b" runs on, and "a" is not placed anywhere
    assert again.preempts == [] and again.runs == []
    assert cluster.job("b").state is JobState.RUNNING
    assert "waiting for a to stop on n1" in (cluster.job("urgent").reason or "")
    assert cluster.job("a").reason == "preempted by urgent; stopping on n1"
    # When a's agent has stopped it: urgent is placed on its GPUs
    stopped(cluster, "a", 1, at=T0 + seconds(20))
    placed = schedule_pass(cluster.sessions, on, now=T0 + seconds(21))
    assert [(m.job_id, m.node) for m in placed.runs] == [("urgent", "n1")]
    assert cluster.job("urgent").gpus == (0, 1)


def test_a_preempted_job_runs_again_without_using_up_its_retries(cluster, on):
    cluster.node("n1", gpus=1)
    run(cluster, "low", on="n1", indices=(0,), at=T0, max_retries=0)
    cluster.submit("urgent", gpus=1, priority=50, at=T0 + seconds(1))
    schedule_pass(cluster.sessions, on, now=T0 + seconds(2))
    stopped(cluster, "low", 1, at=T0 + seconds(3))
    assert [m.job_id for m in schedule_pass(cluster.sessions, on, now=T0 + seconds(4)).runs] == ["urgent"]
    cluster.start("urgent", at=T0 + seconds(5))
    with cluster.sessions.begin() as s:
        moves.finish(s, "urgent", attempt=1, target=JobState.DONE, now=T0 + seconds(9), reason=None,
                         ending=job_store.Ending(exit_code=0, log_tail=""))
    # When the next pass runs: low is placed again, attempt 2, its one preemption not a retry
    assert [m.job_id for m in schedule_pass(cluster.sessions, on, now=T0 + seconds(10)).runs] == ["low"]
    low = cluster.job("low")
    assert (low.state, low.attempt, low.preemptions, low.preempted_by) == (JobState.PLACED, 2, 1, None)


def test_no_preemption_below_the_gap_of_a_job_not_preemptible_or_with_preemption_off(cluster, on, settings):
    cluster.node("n1", gpus=3)
    run(cluster, "close", on="n1", indices=(0,), at=T0, priority=45)
    run(cluster, "kept", on="n1", indices=(1,), at=T0, preemptible=False)
    run(cluster, "low", on="n1", indices=(2,), at=T0)
    cluster.submit("urgent", gpus=2, priority=50, at=T0 + seconds(1))
    # Only "low" may be stopped, and one GPU is not enough: nobody is preempted
    assert schedule_pass(cluster.sessions, on, now=T0 + seconds(2)).preempts == []
    # A 1-GPU job may stop "low", but not with PREEMPTION=off (the default)
    cluster.submit("small", gpus=1, priority=50, at=T0 + seconds(3))
    assert schedule_pass(cluster.sessions, settings, now=T0 + seconds(4)).preempts == []
    assert [m.job_id for m in schedule_pass(cluster.sessions, on, now=T0 + seconds(5)).preempts] == ["low"]
    assert {j: cluster.job(j).state for j in ("close", "kept")} == {"close": JobState.RUNNING,
                                                                    "kept": JobState.RUNNING}


def test_an_account_takes_its_quota_back_from_borrowed_work_at_any_priority(cluster, on):
    # Given nlp (2 GPUs of quota) running 4 jobs on a 4-GPU node, two of them borrowed (no
    # other account had a quota then)
    with cluster.sessions.begin() as s:
        accounts.add_account(s, "nlp", share=1, quota_gpus=2, now=T0)
    cluster.node("n1", gpus=4)
    for i in range(4):
        cluster.submit(f"nlp{i}", gpus=1, account="nlp", priority=100, at=T0 + seconds(i))
    assert len(schedule_pass(cluster.sessions, on, now=T0 + seconds(5)).runs) == 4
    for i in range(4):
        cluster.start(f"nlp{i}", at=T0 + seconds(6 + i))
    assert sorted(j for j in (f"nlp{i}" for i in range(4)) if cluster.job(j).borrowed) == ["nlp2", "nlp3"]
    # When vision gets a quota of 2 and a vision job of far lower priority waits
    with cluster.sessions.begin() as s:
        accounts.add_account(s, "vision", share=1, quota_gpus=2, now=T0 + seconds(15))
    cluster.submit("v", gpus=1, account="vision", priority=0, at=T0 + seconds(20))
    result = schedule_pass(cluster.sessions, on, now=T0 + seconds(30))
    # Then a borrowed nlp job gives its GPU back: the one that ran least (nlp3)
    assert [m.job_id for m in result.preempts] == ["nlp3"]
    assert {j: cluster.job(j).state for j in ("nlp0", "nlp1", "nlp2")} == dict.fromkeys(
        ("nlp0", "nlp1", "nlp2"), JobState.RUNNING)


def test_a_job_not_preemptible_may_not_borrow(cluster, on):
    with cluster.sessions.begin() as s:
        accounts.add_account(s, "vision", share=1, quota_gpus=1, now=T0)
        accounts.add_account(s, "nlp", share=1, quota_gpus=1, now=T0)
    cluster.node("n1", gpus=4)
    cluster.submit("v0", gpus=1, account="vision", at=T0)
    cluster.submit("v1", gpus=1, account="vision", preemptible=False, at=T0 + seconds(1))
    cluster.submit("v2", gpus=1, account="vision", at=T0 + seconds(2))
    placed = {m.job_id for m in schedule_pass(cluster.sessions, on, now=T0 + seconds(3)).runs}
    assert placed == {"v0", "v2"}
    assert "a job that is not preemptible may not borrow" in (cluster.job("v1").reason or "")


def test_reconcile_frees_a_stopping_attempts_gpus_only_after_the_grace(cluster, on):
    cluster.node("n1", gpus=1)
    run(cluster, "low", on="n1", indices=(0,), at=T0)
    cluster.submit("urgent", gpus=1, priority=50, at=T0)
    now = T0 + seconds(1)
    schedule_pass(cluster.sessions, on, now=now)
    cluster.heartbeat("n1", at=now + seconds(70))
    # 40 s after the preemption (grace 30 + 30 stray): still held; 70 s after: freed
    reconcile(cluster.sessions, on, now=now + seconds(40))
    assert cluster.holders("n1") == {0: ("low", 1)}
    reconcile(cluster.sessions, on, now=now + seconds(70))
    assert cluster.holders("n1") == {}


def test_the_gpus_a_preemption_freed_go_to_its_preemptor_not_back_to_the_victim(cluster, on):
    # Given a queue order where age alone decides (the job's own priority weighs nothing in
    # it), so the victim, older, would come first
    order_by_age = replace(on, priority_weight_priority=0.0)
    cluster.node("n1", gpus=1)
    run(cluster, "low", on="n1", indices=(0,), at=T0)
    cluster.submit("urgent", gpus=1, priority=20, at=T0 + seconds(5))
    assert [m.job_id for m in schedule_pass(cluster.sessions, order_by_age,
                                            now=T0 + seconds(6)).preempts] == ["low"]
    stopped(cluster, "low", 1, at=T0 + seconds(8))
    # When the next pass runs: the preemptor goes first and takes the GPU it freed
    placed = schedule_pass(cluster.sessions, order_by_age, now=T0 + seconds(9))
    assert [m.job_id for m in placed.runs] == ["urgent"]
    assert cluster.job("low").state is JobState.QUEUED
    # And while the preemptor has not started, its victim waits for it (no ping-pong)
    cluster.node("n2", gpus=1, at=T0 + seconds(9))
    with cluster.sessions.begin() as s:
        job_store.transition(s, "urgent", JobState.QUEUED, now=T0 + seconds(10), reason="test: back")
    again = schedule_pass(cluster.sessions, order_by_age, now=T0 + seconds(11))
    assert [m.job_id for m in again.runs] == ["urgent"]
    assert cluster.job("low").reason == "preempted by urgent; waiting for urgent to start"


def test_cancelling_a_victim_while_it_stops_keeps_its_gpus_until_its_agent_has_stopped_it(cluster, on):
    cluster.node("n1", gpus=1)
    run(cluster, "low", on="n1", indices=(0,), at=T0)
    cluster.submit("urgent", gpus=1, priority=50, at=T0)
    schedule_pass(cluster.sessions, on, now=T0 + seconds(1))
    cluster.cancel("low", at=T0 + seconds(2))
    # Then its GPU is still held: the urgent job is not placed on a GPU a process still uses
    assert cluster.holders("n1") == {0: ("low", 1)}
    assert schedule_pass(cluster.sessions, on, now=T0 + seconds(3)).runs == []


def test_a_job_not_preemptible_that_may_not_borrow_does_not_hide_a_preemptible_one_of_its_shape(cluster, on):
    # Given vision (quota 1) holding its GPU, a low lab job on the other, and two vision jobs
    # of one shape and priority waiting: the first not preemptible (so it may not borrow)
    with cluster.sessions.begin() as s:
        accounts.add_account(s, "vision", share=1, quota_gpus=1, now=T0)
    cluster.node("n1", gpus=2)
    run(cluster, "mine", on="n1", indices=(0,), at=T0, account="vision", priority=50)
    run(cluster, "lab", on="n1", indices=(1,), at=T0, priority=0)
    cluster.submit("kept", gpus=1, priority=50, account="vision", preemptible=False, at=T0 + seconds(1))
    cluster.submit("flex", gpus=1, priority=50, account="vision", at=T0 + seconds(2))
    # When a pass runs: "kept" could not run after any preemption (it may not borrow), but
    # "flex" may borrow, so it preempts the lab job
    assert [m.job_id for m in schedule_pass(cluster.sessions, on, now=T0 + seconds(3)).preempts] == ["lab"]


def test_a_job_marked_borrowed_whose_account_is_back_within_its_quota_is_not_borrowed(cluster, on):
    # Given nlp (quota 1) that borrowed a second GPU, then ended the job within its quota
    with cluster.sessions.begin() as s:
        accounts.add_account(s, "nlp", share=1, quota_gpus=1, now=T0)
    cluster.node("n1", gpus=2)
    for i in range(2):
        cluster.submit(f"nlp{i}", gpus=1, account="nlp", at=T0 + seconds(i))
    schedule_pass(cluster.sessions, on, now=T0 + seconds(2))
    for i in range(2):
        cluster.start(f"nlp{i}", at=T0 + seconds(3))
    assert cluster.job("nlp1").borrowed
    with cluster.sessions.begin() as s:
        moves.finish(s, "nlp0", attempt=1, target=JobState.DONE, now=T0 + seconds(4), reason=None,
                         ending=job_store.Ending(exit_code=0, log_tail=""))
    run(cluster, "other", on="n1", indices=(0,), at=T0 + seconds(5))
    # When a job of the same priority waits: nlp1 is within nlp's quota now, not fair game
    cluster.submit("waiting", gpus=1, at=T0 + seconds(6))
    assert schedule_pass(cluster.sessions, on, now=T0 + seconds(7)).preempts == []
