"""Gang jobs on real Postgres: a pass places every part in its one transaction (or none),
each part starts and ends on its node, the job ends as one, and a lost node retries the
whole gang."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from overlay.errors import GpuTaken
from overlay.model import GangPlacement, Placement
from overlay.states import JobState
from overlay.store import gangs
from overlay.store import jobs as job_store
from overlay.store import preemption as preemption_store
from overlay.store.running import running_jobs
from overlay.store.tables import AttemptUsageRow
from tests.store.world import T0, seconds, ticking
from workers import execution
from workers.runner import Outcome
from workers.scheduler import RESEND_AFTER_S, reconcile, schedule_pass


def two_node_cluster(cluster, *, gpus: int = 2) -> None:
    cluster.node("node-a", gpus=gpus)
    cluster.node("node-b", gpus=gpus)


def running_gang(cluster, settings) -> None:
    """Gang job ``g`` with a retry left, its two parts running on node-a and node-b."""
    two_node_cluster(cluster)
    cluster.submit("g", gpus=1, nodes=2, max_retries=1)
    schedule_pass(cluster.sessions, settings, now=T0)
    start_part(cluster, "g", 0, "node-a")
    start_part(cluster, "g", 1, "node-b")


def parts(cluster, job_id: str) -> list[tuple[int, str, tuple[int, ...], str, int | None]]:
    with cluster.sessions() as s:
        return [(p.part, p.node, p.gpus, p.state, p.exit_code) for p in gangs.parts(s, job_id)]


def start_part(cluster, job_id: str, part: int, node: str, *, at=T0):
    with cluster.sessions.begin() as s:
        return gangs.start(s, job_id, attempt=cluster.job(job_id).attempt, part=part, node=node, now=at)


def end_part(cluster, job_id: str, part: int, target: JobState, *, exit_code: int | None, at=T0,
             reason: str | None = None):
    with cluster.sessions.begin() as s:
        return gangs.finish_part(s, job_id, attempt=cluster.job(job_id).attempt, part=part, target=target,
                                 reason=reason, now=at,
                                 ending=job_store.Ending(exit_code=exit_code, log_tail=f"part {part} out"))


def test_a_pass_places_both_parts_in_its_transaction_and_sends_a_run_job_per_part(cluster, settings):
    # Given two 2-GPU nodes and a 2-node job of 2 GPUs a node
    two_node_cluster(cluster)
    cluster.submit("g", gpus=2, nodes=2)
    # When a pass runs
    messages = schedule_pass(cluster.sessions, settings, now=T0 + seconds(1)).runs
    # Then one run_job per part goes to its node, rank 0 first
    assert [(m.job_id, m.attempt, m.node, m.part) for m in messages] == [
        ("g", 1, "node-a", 0), ("g", 1, "node-b", 1)]
    # and both nodes' GPUs are held by the one attempt; the job row keeps rank 0's
    assert cluster.holders("node-a") == cluster.holders("node-b") == {0: ("g", 1), 1: ("g", 1)}
    job = cluster.job("g")
    assert (job.state, job.node, job.gpus, job.spec.nodes) == (JobState.PLACED, "node-a", (0, 1), 2)
    assert parts(cluster, "g") == [(0, "node-a", (0, 1), "PLACED", None),
                                   (1, "node-b", (0, 1), "PLACED", None)]
    # and the rendezvous is rank 0's address as its agent reported it (here: its hostname), on a port
    # of the configured range
    assert job.master_addr == "node-a.test"
    assert job.master_port is not None and settings.gang_port_min <= job.master_port <= settings.gang_port_max
    # and backfill sees both parts holding GPUs
    with cluster.sessions() as s:
        assert sorted((r.node, r.gpus) for r in running_jobs(s, now=T0)) == [
            ("node-a", (0, 1)), ("node-b", (0, 1))]


def test_a_gang_whose_one_gpu_is_taken_holds_nothing(cluster):
    # Given node-b's GPU 1 held by another job
    two_node_cluster(cluster)
    cluster.submit("other", gpus=1)
    cluster.place("other", on="node-b", gpus=(1,))
    cluster.submit("g", gpus=2, nodes=2)
    gang = GangPlacement(node="node-a", gpus=(0, 1), parts=(Placement(node="node-a", gpus=(0, 1)),
                                                           Placement(node="node-b", gpus=(0, 1))))
    # When the gang is placed over it
    with pytest.raises(GpuTaken), cluster.sessions.begin() as s:
        job_store.place(s, "g", gang, now=T0)
    # Then no part holds anything and the job waits
    assert cluster.holders("node-a") == {} and cluster.holders("node-b") == {1: ("other", 1)}
    assert cluster.job("g").state is JobState.QUEUED and parts(cluster, "g") == []


def test_the_first_part_to_start_runs_the_job_and_it_is_done_when_every_part_is(cluster, settings):
    two_node_cluster(cluster)
    cluster.submit("g", gpus=2, nodes=2)
    schedule_pass(cluster.sessions, settings, now=T0)
    # When part 1 starts first, then part 0
    one = start_part(cluster, "g", 1, "node-b", at=T0 + seconds(1))
    assert (one.part, one.node, one.state) == (1, "node-b", JobState.RUNNING)
    start_part(cluster, "g", 0, "node-a", at=T0 + seconds(2))
    assert cluster.job("g").started_at == T0 + seconds(1)
    # And a part may not start twice, nor on another node
    with pytest.raises(job_store.StaleAttempt):
        start_part(cluster, "g", 1, "node-b")
    # When part 0 ends cleanly: the job runs on, and only node-a's GPUs are free
    end_part(cluster, "g", 0, JobState.DONE, exit_code=0, at=T0 + seconds(5))
    assert cluster.job("g").state is JobState.RUNNING
    assert cluster.holders("node-a") == {} and len(cluster.holders("node-b")) == 2
    # When part 1 ends cleanly too: DONE, with rank 0's output, every GPU free
    end_part(cluster, "g", 1, JobState.DONE, exit_code=0, at=T0 + seconds(7))
    done = cluster.job("g")
    assert (done.state, done.exit_code, done.finished_at) == (JobState.DONE, 0, T0 + seconds(7))
    with cluster.sessions() as s:
        assert job_store.log_tail(s, "g") == "part 0 out"
        assert gangs.part_log_tail(s, "g", 1) == "part 1 out"
        # and each node's GPU-seconds are accounted: 2 GPUs × 5 s and 2 GPUs × 7 s
        usage = {u.node: u.gpu_seconds for u in s.scalars(select(AttemptUsageRow))}
    assert usage == {"node-a": 10.0, "node-b": 14.0}
    assert cluster.holders("node-b") == {}


def test_one_part_failing_fails_the_job_as_one_and_names_the_parts_to_stop(cluster, settings):
    two_node_cluster(cluster)
    cluster.node("node-c", gpus=2)
    cluster.submit("g", gpus=1, nodes=3)
    schedule_pass(cluster.sessions, settings, now=T0)
    start_part(cluster, "g", 0, "node-a")
    start_part(cluster, "g", 1, "node-b")
    # When part 1 exits 3 while part 2 has not started yet
    end_part(cluster, "g", 1, JobState.FAILED, exit_code=3, reason="exit code 3", at=T0 + seconds(4))
    # Then the job has FAILED, saying which part; part 2 will never start (its GPU is freed now)
    failed = cluster.job("g")
    assert (failed.state, failed.exit_code, failed.reason) == (
        JobState.FAILED, 3, "part 1 on node-b: exit code 3")
    assert [p[3] for p in parts(cluster, "g")] == ["RUNNING", "FAILED", "CANCELLED"]
    assert cluster.holders("node-c") == {} and cluster.holders("node-b") == {}
    # and rank 0, still running, is the one to stop; its GPU is held until it has ended
    with cluster.sessions() as s:
        assert gangs.to_stop(s, "g", attempt=1, besides=1) == ["node-a"]
        assert gangs.to_stop_after(s, "g", attempt=1, part=1) == (["node-a"], "job is FAILED")
    assert cluster.holders("node-a") == {0: ("g", 1)}
    # When its agent has stopped it: recorded, freed, and the job stays FAILED
    end_part(cluster, "g", 0, JobState.CANCELLED, exit_code=None, reason="job is FAILED")
    assert cluster.job("g").state is JobState.FAILED and cluster.holders("node-a") == {}
    assert [p[3] for p in parts(cluster, "g")] == ["CANCELLED", "FAILED", "CANCELLED"]


def test_a_cancelled_gang_frees_its_unstarted_parts_and_stops_the_running_ones(cluster, settings):
    two_node_cluster(cluster)
    cluster.submit("g", gpus=1, nodes=2)
    schedule_pass(cluster.sessions, settings, now=T0)
    start_part(cluster, "g", 0, "node-a")
    cluster.cancel("g", at=T0 + seconds(1))
    assert cluster.job("g").state is JobState.CANCELLED
    assert cluster.holders("node-b") == {} and cluster.holders("node-a") == {0: ("g", 1)}
    with cluster.sessions() as s:
        assert gangs.to_stop(s, "g", attempt=1) == ["node-a"]


def test_a_lost_node_retries_the_whole_gang_and_frees_the_lost_parts_gpus(cluster, settings):
    # Given a 2-node gang with a retry left, both parts running, reconcile ticking
    running_gang(cluster, settings)
    # When node-b falls silent past the TTL while node-a heartbeats
    now = T0 + seconds(settings.node_ttl_s + 5)
    cluster.heartbeat("node-a", at=now)
    cluster.reconcile_has_been_ticking(until=now - seconds(1))
    reconcile(cluster.sessions, settings, now=now)
    # Then the job is QUEUED again as one, naming the lost node
    job = cluster.job("g")
    assert (job.state, job.reason) == (JobState.QUEUED, "node lost (node-b); retry 1 of 1")
    # and node-b's GPU is free; node-a's part keeps its GPU until its agent has stopped it
    assert cluster.holders("node-b") == {} and cluster.holders("node-a") == {0: ("g", 1)}
    # And while that part runs, the retry is not placed (two attempts of part 0 at once)
    cluster.heartbeat("node-b", at=now)
    assert schedule_pass(cluster.sessions, settings, now=now + seconds(1)).runs == []
    assert cluster.job("g").reason == "waiting for its previous attempt to stop on node-a"
    # When node-a's part ends after that (its agent stopped it): its end is recorded, its GPU freed
    end_part(cluster, "g", 0, JobState.CANCELLED, exit_code=None)
    assert cluster.holders("node-a") == {}
    with cluster.sessions() as s:
        assert gangs.parts(s, "g")[0].state == "CANCELLED"
    # And the retry goes: attempt 2 on both nodes
    again = schedule_pass(cluster.sessions, settings, now=now + seconds(2)).runs
    assert sorted((m.node, m.part) for m in again) == [("node-a", 0), ("node-b", 1)]
    assert cluster.job("g").attempt == 2


def test_reconcile_resends_the_run_job_of_a_part_never_started(cluster, settings):
    two_node_cluster(cluster)
    cluster.submit("g", gpus=1, nodes=2)
    schedule_pass(cluster.sessions, settings, now=T0)
    start_part(cluster, "g", 0, "node-a")
    late = T0 + seconds(RESEND_AFTER_S + 1)
    cluster.heartbeat("node-a", at=late)
    cluster.heartbeat("node-b", at=late)
    assert [(m.job_id, m.node, m.part) for m in reconcile(cluster.sessions, settings, now=late)] == [
        ("g", "node-b", 1)]


def test_the_agents_run_both_parts_to_done_with_the_fake_executor(cluster, settings, agent_runtime):
    two_node_cluster(cluster)
    cluster.submit("g", gpus=1, nodes=2, cmd=("train", "0"))
    schedule_pass(cluster.sessions, settings, now=T0)
    a, b = agent_runtime("node-a"), agent_runtime("node-b")
    # When node-b's agent runs part 1 and node-a's part 0
    clean = Outcome(exit_code=0, reason=None)
    assert execution.execute(b, "g", 1, part=1, clock=ticking(T0 + seconds(1))) == clean
    assert execution.execute(a, "g", 1, part=0, clock=ticking(T0 + seconds(3))) == clean
    # Then the job is DONE and each part wrote its own log
    assert cluster.job("g").state is JobState.DONE
    assert execution.log_file(a, "g", 0).name == "g.log"
    assert execution.log_file(b, "g", 1).name == "g.part1.log"
    assert "would run" in execution.log_file(b, "g", 1).read_text()
    # and a part's message for a one-node job's part 1 changes nothing
    cluster.submit("one", gpus=1)
    schedule_pass(cluster.sessions, settings, now=T0 + seconds(5))
    assert execution.execute(b, "one", 1, part=1) is None


def test_a_running_gang_is_no_preemption_victim(cluster, settings):
    # Given a running gang and a running one-node job
    two_node_cluster(cluster)
    cluster.submit("g", gpus=1, nodes=2)
    schedule_pass(cluster.sessions, settings, now=T0)
    start_part(cluster, "g", 0, "node-a")
    cluster.submit("solo", gpus=1)
    schedule_pass(cluster.sessions, settings, now=T0)
    with cluster.sessions.begin() as s:
        gangs.start(s, "solo", attempt=1, part=0, node=cluster.job("solo").node)
    # Then only the one-node job is a candidate to preempt
    with cluster.sessions() as s:
        assert [c.job_id for c in preemption_store.candidates(s, now=T0)] == ["solo"]
        # and a one-node job's end never stops anything else
        assert gangs.to_stop_after(s, "solo", attempt=1, part=0) == ([], "")


def test_a_part_still_running_on_a_live_node_keeps_its_gpus_past_the_stray_grace(cluster, settings):
    # Given a gang that has run for minutes when node-b is lost
    running_gang(cluster, settings)
    late = T0 + seconds(600)
    cluster.heartbeat("node-a", at=late)
    cluster.reconcile_has_been_ticking(until=late - seconds(1))
    reconcile(cluster.sessions, settings, now=late)
    # When reconcile ticks again well past the stray grace while node-a's part runs on
    cluster.heartbeat("node-a", at=late + seconds(60))
    reconcile(cluster.sessions, settings, now=late + seconds(60))
    # Then its GPU is still held (a retry placed there would share it with the running part)
    assert cluster.holders("node-a") == {0: ("g", 1)}
