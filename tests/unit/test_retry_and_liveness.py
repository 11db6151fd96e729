"""Lost attempts are retried while retries last; silence counts only while beat was asking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from overlay.liveness import expiry_window
from overlay.model import Job, JobSpec
from overlay.retry import decide_retry
from overlay.states import JobState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(attempt: int, max_retries: int) -> Job:
    spec = JobSpec(job_id="j", cmd=("true",), max_retries=max_retries)
    return Job(spec=spec, state=JobState.RUNNING, attempt=attempt, node="node-a")


def test_a_lost_attempt_with_retries_left_is_queued_again_saying_why():
    decision = decide_retry(job(attempt=1, max_retries=2))
    assert decision.target is JobState.QUEUED
    assert decision.reason == "node lost (node-a); retry 1 of 2"


def test_a_lost_attempt_without_retries_left_fails_with_node_lost():
    assert decide_retry(job(attempt=3, max_retries=2)).target is JobState.FAILED
    assert decide_retry(job(attempt=1, max_retries=0)).reason == "node lost"


def test_steady_ticks_judge_nodes_against_the_ttl():
    window = expiry_window(T0, previous_tick=T0 - timedelta(seconds=3), paused_until=None,
                           ttl_s=15, tick_s=3)
    assert window.cutoff == T0 - timedelta(seconds=15)


def test_after_a_gap_in_ticks_no_node_is_judged_for_one_ttl():
    # Given beat was down for a minute
    now = T0 + timedelta(seconds=60)
    window = expiry_window(now, previous_tick=T0, paused_until=None, ttl_s=15, tick_s=3)
    # Then nobody is declared dead until the nodes have had a TTL of heartbeats
    assert window.cutoff is None
    assert window.paused_until == now + timedelta(seconds=15)
    later = expiry_window(now + timedelta(seconds=3), previous_tick=now,
                          paused_until=window.paused_until, ttl_s=15, tick_s=3)
    assert later.cutoff is None
    after = expiry_window(now + timedelta(seconds=16), previous_tick=now + timedelta(seconds=13),
                          paused_until=window.paused_until, ttl_s=15, tick_s=3)
    assert after.cutoff == now + timedelta(seconds=1)
