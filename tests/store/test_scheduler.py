"""The scheduler's work on real Postgres, called directly: a placement pass over the queue,
and the reconcile tick that retries or fails the jobs of a node gone silent."""

from __future__ import annotations

from overlay.model import NodeState
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from tests.store.world import H100, T0, race, seconds
from workers.scheduler import RESEND_AFTER_S, reconcile, schedule_pass


def sent(messages) -> list[tuple[str, int, str]]:
    """The run_job messages a pass or a tick asks to send, as (job_id, attempt, node)."""
    return [(m.job_id, m.attempt, m.node) for m in messages]


def node_states(cluster, settings, *, at) -> dict[str, NodeState]:
    with cluster.sessions() as s:
        infos = node_store.node_infos(s, now=at, ttl_s=settings.node_ttl_s, include_offline=True)
        return {i.snapshot.name: i.snapshot.state for i in infos}


def test_a_pass_places_what_fits_books_its_gpus_and_says_why_the_rest_waits(cluster, settings):
    # Given node-a with 4 A100s and node-b with 2 H100s, and four queued jobs
    cluster.node("node-a", gpus=4)
    cluster.node("node-b", gpus=2, model=H100)
    cluster.submit("huge", gpus=8, priority=10, at=T0)
    cluster.submit("pair", gpus=2, at=T0 + seconds(1))
    cluster.submit("h100", gpus=1, gpu_model="h100", at=T0 + seconds(2))
    cluster.submit("cpu", gpus=0, at=T0 + seconds(3))
    # When one scheduling pass runs
    dispatches = schedule_pass(cluster.sessions, settings, now=T0 + seconds(5)).runs
    # Then every job that fits is PLACED as attempt 1, and a run_job goes to its node
    assert {d.job_id for d in dispatches} == {"pair", "h100", "cpu"}
    for d in dispatches:
        job = cluster.job(d.job_id)
        assert (job.state, job.attempt, job.placed_at) == (JobState.PLACED, 1, T0 + seconds(5))
        assert sent([d]) == [(d.job_id, 1, job.node)]
    assert cluster.job("h100").node == "node-b"
    # and the GPUs are booked to them, each GPU once
    booked = {(node, gpu): holder for node in ("node-a", "node-b")
              for gpu, (holder, _) in cluster.holders(node).items()}
    assert sorted(booked.values()) == ["h100", "pair", "pair"]
    for job_id in ("pair", "h100"):
        job = cluster.job(job_id)
        assert {(job.node, g) for g in job.gpus} == {k for k, v in booked.items() if v == job_id}
    # and the job that cannot fit waits QUEUED, saying why
    huge = cluster.job("huge")
    assert huge.state is JobState.QUEUED
    assert huge.reason == "needs 8 GPUs; the most any online node has: 4"


def test_a_pass_over_a_full_node_leaves_the_job_queued_and_a_later_pass_places_it(cluster, settings):
    # Given node-a's only GPU held by a running job, and another one-GPU job queued
    cluster.node("node-a", gpus=1)
    cluster.running("first", on="node-a", gpus=(0,))
    cluster.submit("second", gpus=1, at=T0 + seconds(1))
    # When a pass runs
    # Then nothing is placed, and the job says it waits for a GPU
    assert schedule_pass(cluster.sessions, settings, now=T0 + seconds(2)).runs == []
    assert cluster.job("second").state is JobState.QUEUED
    assert "most free on one node: 0" in (cluster.job("second").reason or "")
    # When the first job ends and a pass runs again
    cluster.cancel("first", at=T0 + seconds(3))
    with cluster.sessions.begin() as s:
        job_store.release_gpus(s, "first")  # as its agent does once the job is dead
    dispatches = schedule_pass(cluster.sessions, settings, now=T0 + seconds(4)).runs
    # Then the waiting job gets the GPU
    assert sent(dispatches) == [("second", 1, "node-a")]
    assert cluster.holders("node-a") == {0: ("second", 1)}


def test_a_pass_places_nothing_on_a_node_silent_for_longer_than_the_ttl(cluster, settings):
    # Given node-a last heard from at T0, node-b heartbeating, and a job only node-a fits
    cluster.node("node-a", gpus=4)
    cluster.node("node-b", gpus=2, model=H100)
    later = T0 + seconds(settings.node_ttl_s + 5)
    cluster.heartbeat("node-b", at=later)
    cluster.submit("a100", gpus=1, gpu_model="a100", at=later)
    # When a pass runs
    # Then the job waits: node-a is not a candidate
    assert schedule_pass(cluster.sessions, settings, now=later).runs == []
    assert cluster.job("a100").state is JobState.QUEUED
    assert cluster.holders("node-a") == {}


def test_two_schedulers_passing_at_once_place_each_job_once_and_book_each_gpu_once(cluster, settings):
    # Given two GPUs and four one-GPU jobs
    cluster.node("node-a", gpus=2)
    for i in range(4):
        cluster.submit(f"j{i}", gpus=1, at=T0 + seconds(i))
    # When two scheduler processes run a pass at the same moment
    now = T0 + seconds(10)
    first, second = race(lambda: schedule_pass(cluster.sessions, settings, now=now).runs,
                         lambda: schedule_pass(cluster.sessions, settings, now=now).runs)
    # Then the passes took turns: two jobs placed in all, once each, on different GPUs
    assert not isinstance(first, Exception) and not isinstance(second, Exception), (first, second)
    dispatched = [d.job_id for d in [*first, *second]]
    assert sorted(dispatched) == ["j0", "j1"]
    assert sorted(job_id for job_id, _ in cluster.holders("node-a").values()) == ["j0", "j1"]
    assert {cluster.job(j).state for j in ("j2", "j3")} == {JobState.QUEUED}


def test_reconcile_takes_a_silent_node_offline_and_retries_or_fails_its_jobs(cluster, settings):
    # Given node-a running a job with a retry left and one without, node-b running one,
    # and reconcile ticking all along
    cluster.node("node-a", gpus=2)
    cluster.node("node-b", gpus=2, model=H100)
    cluster.running("retried", on="node-a", gpus=(0,), max_retries=1)
    cluster.running("lost", on="node-a", gpus=(1,))
    cluster.running("safe", on="node-b", gpus=(0,))
    # When node-a falls silent for longer than the TTL while node-b keeps heartbeating
    now = T0 + seconds(settings.node_ttl_s + 5)
    cluster.heartbeat("node-b", at=now)
    cluster.reconcile_has_been_ticking(until=now - seconds(1))
    reconcile(cluster.sessions, settings, now=now)
    # Then node-a is offline, node-b online
    assert node_states(cluster, settings, at=now) == {"node-a": NodeState.OFFLINE, "node-b": NodeState.ONLINE}
    # and the job with a retry left is QUEUED again, saying why
    retried = cluster.job("retried")
    assert (retried.state, retried.reason) == (JobState.QUEUED, "node lost (node-a); retry 1 of 1")
    assert cluster.events("retried")[-1] == ("QUEUED", 1, "node lost (node-a); retry 1 of 1")
    # and the one without has FAILED with reason "node lost"
    assert (cluster.job("lost").state, cluster.job("lost").reason) == (JobState.FAILED, "node lost")
    # and node-a's GPUs are free; node-b's job runs on, untouched
    assert cluster.holders("node-a") == {}
    assert cluster.job("safe").state is JobState.RUNNING
    assert cluster.holders("node-b") == {0: ("safe", 1)}


def test_reconcile_after_a_gap_judges_no_node_until_a_ttl_of_heartbeats_has_passed(cluster, settings):
    # Given node-a running a job, last heard from at T0, and no reconcile tick since
    # (beat was away: the node was silent because nobody asked it)
    cluster.node("node-a", gpus=1)
    cluster.running("j", on="node-a", gpus=(0,))
    now = T0 + seconds(settings.node_ttl_s + 5)
    # When reconcile ticks again
    reconcile(cluster.sessions, settings, now=now)
    # Then node-a stays online and its job runs on
    assert node_states(cluster, settings, at=now) == {"node-a": NodeState.ONLINE}
    assert cluster.job("j").state is JobState.RUNNING


def test_reconcile_sends_again_the_run_job_of_a_placement_its_agent_never_started(cluster, settings):
    # Given a job PLACED on a live node at T0 whose run_job message was lost
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cluster.place("j", on="node-a", gpus=(0,))
    # When reconcile ticks before and after RESEND_AFTER_S
    soon, late = T0 + seconds(RESEND_AFTER_S - 1), T0 + seconds(RESEND_AFTER_S + 1)
    cluster.heartbeat("node-a", at=soon)
    assert reconcile(cluster.sessions, settings, now=soon) == []
    cluster.heartbeat("node-a", at=late)
    # Then only the later tick sends it again, for the same attempt
    assert sent(reconcile(cluster.sessions, settings, now=late)) == [("j", 1, "node-a")]
    assert cluster.job("j").state is JobState.PLACED
