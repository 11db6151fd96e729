"""The agent's execute path on real Postgres with EXECUTOR=fake: start the attempt, run it,
record its end; and a message or an end that is no longer the attempt's changes nothing."""

from __future__ import annotations

from overlay.states import JobState
from overlay.store import jobs as job_store
from tests.store.world import T0, seconds, ticking
from workers.execution import execute, run_started, start
from workers.heartbeat import check_attempts


def test_a_placed_job_runs_to_done_and_its_gpus_are_free_again(cluster, agent_runtime):
    # Given a job placed on node-a's GPUs 1 and 2
    cluster.node("node-a", gpus=4)
    cluster.submit("j", gpus=2, cmd=("python", "train.py"))
    cluster.place("j", on="node-a", gpus=(1, 2))
    rt = agent_runtime("node-a")
    # When node-a's agent executes its run_job
    outcome = execute(rt, "j", 1, clock=ticking(T0 + seconds(1)))
    # Then the attempt ran and ended DONE with exit code 0, its output kept
    assert outcome is not None and (outcome.exit_code, outcome.reason) == (0, None)
    done = cluster.job("j")
    assert (done.state, done.exit_code, done.attempt, done.gpus) == (JobState.DONE, 0, 1, (1, 2))
    assert (done.started_at, done.finished_at) == (T0 + seconds(1), T0 + seconds(2))
    with cluster.sessions() as s:
        assert "would run ['python', 'train.py']" in job_store.get_job(s, "j").log_tail
    assert [state for state, _, _ in cluster.events("j")] == ["QUEUED", "PLACED", "RUNNING", "DONE"]
    # and its GPUs are free, in Postgres and in the agent's own books
    assert cluster.holders("node-a") == {}
    assert rt.agent.busy_now() == {} and not rt.agent.runs("j", 1)


def test_a_run_job_for_an_attempt_the_job_has_moved_on_from_changes_nothing(cluster, agent_runtime):
    # Given a job whose attempt 1 was given up and which is PLACED as attempt 2 on node-b
    cluster.node("node-a", gpus=1)
    cluster.node("node-b", gpus=1)
    cluster.submit("j", gpus=1, max_retries=1)
    cluster.place("j", on="node-a", gpus=(0,))
    with cluster.sessions.begin() as s:
        job_store.transition(s, "j", JobState.QUEUED, now=T0 + seconds(1), reason="retry", attempt=1)
    cluster.place("j", on="node-b", gpus=(0,), at=T0 + seconds(2))
    before = (cluster.job("j"), cluster.events("j"))
    # When node-a receives a late run_job for attempt 1, and one for attempt 2 (node-b's)
    late = execute(agent_runtime("node-a"), "j", 1, clock=ticking(T0 + seconds(3)))
    elsewhere = execute(agent_runtime("node-a"), "j", 2, clock=ticking(T0 + seconds(3)))
    # Then neither runs anything or changes the job
    assert (late, elsewhere) == (None, None)
    assert (cluster.job("j"), cluster.events("j")) == before


def test_a_job_cancelled_before_its_run_job_arrives_is_not_run(cluster, agent_runtime):
    # Given a placed job, cancelled
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cluster.place("j", on="node-a", gpus=(0,))
    cluster.cancel("j", at=T0 + seconds(1))
    rt = agent_runtime("node-a")
    # When its run_job arrives
    # Then nothing runs, and the job stays CANCELLED with its GPU free
    assert execute(rt, "j", 1, clock=ticking(T0 + seconds(2))) is None
    assert cluster.job("j").state is JobState.CANCELLED
    assert cluster.holders("node-a") == {}
    assert not rt.agent.runs("j", 1)


def test_a_redelivered_run_job_of_a_finished_attempt_runs_nothing_again(cluster, agent_runtime):
    # Given a job that ran to DONE
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cluster.place("j", on="node-a", gpus=(0,))
    rt = agent_runtime("node-a")
    execute(rt, "j", 1, clock=ticking(T0 + seconds(1)))
    before = cluster.events("j")
    # When the same run_job is delivered again
    # Then it is ignored
    assert execute(rt, "j", 1, clock=ticking(T0 + seconds(5))) is None
    assert cluster.events("j") == before


def test_a_job_cancelled_while_running_is_stopped_and_its_end_recorded_on_the_cancelled_job(
    cluster, agent_runtime
):
    # Given a job started on node-a that would run for 3 s (if the stop were missed, the
    # test fails after those 3 s instead of hanging)
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1, cmd=("sleep", "3"))
    cluster.place("j", on="node-a", gpus=(0,))
    rt = agent_runtime("node-a")
    job = start(rt, "j", 1, now=T0 + seconds(1))
    assert job is not None and cluster.holders("node-a") == {0: ("j", 1)}
    # When the user cancels it (the GPU stays held while the process may still be dying)
    cluster.cancel("j", at=T0 + seconds(2))
    assert cluster.holders("node-a") == {0: ("j", 1)}
    # And the agent's periodic check (which confirms a cancel message, or stands in for a
    # lost one) finds the job CANCELLED in Postgres
    check_attempts(rt)
    # Then the run stops, as cancelled
    outcome = run_started(rt, job, clock=ticking(T0 + seconds(3)))
    assert outcome.cancelled and outcome.reason == "job is CANCELLED"
    # and the job stays CANCELLED, by the user, with the GPU free
    cancelled = cluster.job("j")
    assert (cancelled.state, cancelled.reason) == (JobState.CANCELLED, "cancelled by user")
    assert cluster.holders("node-a") == {}


def test_an_attempt_superseded_while_running_stops_and_frees_only_its_own_gpus(cluster, agent_runtime):
    # Given attempt 1 running on node-a, given up (node-a was silent) and re-placed as
    # attempt 2 on node-b while node-a's agent still runs it
    cluster.node("node-a", gpus=1)
    cluster.node("node-b", gpus=1)
    cluster.submit("j", gpus=1, max_retries=1, cmd=("sleep", "3"))
    cluster.place("j", on="node-a", gpus=(0,))
    rt = agent_runtime("node-a")
    job = start(rt, "j", 1, now=T0 + seconds(1))
    assert job is not None
    with cluster.sessions.begin() as s:
        job_store.transition(s, "j", JobState.QUEUED, now=T0 + seconds(20), reason="node lost (node-a)",
                             attempt=1, keep_gpus=True)
    cluster.place("j", on="node-b", gpus=(0,), at=T0 + seconds(21))
    before = cluster.events("j")
    # When node-a's agent's periodic check notices
    check_attempts(rt)
    outcome = run_started(rt, job, clock=ticking(T0 + seconds(22)))
    # Then it stops, records nothing on the job, and frees attempt 1's GPU on node-a only
    assert outcome.cancelled and outcome.reason == "superseded by a newer attempt"
    assert cluster.events("j") == before
    assert (cluster.job("j").state, cluster.job("j").attempt) == (JobState.PLACED, 2)
    assert cluster.holders("node-a") == {}
    assert cluster.holders("node-b") == {0: ("j", 2)}
