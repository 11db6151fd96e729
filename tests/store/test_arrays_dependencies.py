"""Job arrays and dependencies on real Postgres, with the scheduler's pass called directly:
an array stored in one transaction, its %N limit held by the pass, jobs waiting on their
dependencies, a dependency never satisfied cancelling its dependents (transitively), and
unknown ids and cycles refused at submit."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from overlay.arrays import parse_array
from overlay.dependencies import parse
from overlay.errors import DuplicateJob, InvalidField, JobNotFound
from overlay.model import JobSpec
from overlay.states import JobState
from overlay.store import arrays as array_store
from overlay.store import dependencies, moves
from overlay.store import jobs as job_store
from overlay.store.holds import queued_for_pass
from overlay.store.jobs import Ending
from overlay.store.tables import JobRow
from tests.store.world import T0, seconds
from workers.scheduler import schedule_pass


def submit_array(cluster, array_id: str, expression: str, *, at=T0, needs=None, **spec):
    with cluster.sessions.begin() as s:
        template = JobSpec(job_id=array_id, cmd=("sweep",), **spec)
        deps = parse(needs or {})
        dependencies.check(s, {array_id}, deps)
        array = array_store.insert_array(s, template, parse_array(expression), expression=expression, now=at)
        dependencies.add_to_array(s, array_id, deps)
        return array


def submit_after(cluster, job_id: str, needs: dict[str, list[str]], *, at=T0, **spec):
    with cluster.sessions.begin() as s:
        deps = parse(needs)
        dependencies.check(s, {job_id}, deps)
        job = job_store.insert_job(s, JobSpec(job_id=job_id, cmd=("eval",), **spec), now=at)
        dependencies.add(s, job_id, deps)
        return job


def end(cluster, job_id: str, state: JobState, *, at=T0):
    """The job's attempt ends ``state`` (RUNNING first if it was only placed or queued)."""
    job = cluster.job(job_id)
    if job.state is JobState.QUEUED:
        cluster.place(job_id, on="node-a", at=at)
    if cluster.job(job_id).state is JobState.PLACED:
        cluster.start(job_id, at=at)
    with cluster.sessions.begin() as s:
        moves.finish(s, job_id, attempt=cluster.job(job_id).attempt, target=state, now=at, reason=None,
                         ending=Ending(exit_code=0 if state is JobState.DONE else 1, log_tail=""))


def test_an_array_is_stored_with_every_task_queued_in_index_order(cluster):
    # When an array of 1,000 tasks with a step and a list is submitted
    array = submit_array(cluster, "sweep", "0-1997:2,5000%10", gpus=1, priority=3)
    # Then it counts 1,000 queued tasks, each a job <array>_<index> with the template's request
    assert (array.size, array.max_running, array.counts) == (1000, 10, {"QUEUED": 1000})
    with cluster.sessions() as s:
        assert array_store.get_array(s, "sweep").counts == {"QUEUED": 1000}
        page = array_store.tasks(s, "sweep", limit=3, offset=998)
    assert [(j.job_id, j.spec.array_index, j.spec.gpus, j.spec.priority) for j in page] == [
        ("sweep_1996", 1996, 1, 3), ("sweep_5000", 5000, 1, 3)]
    task = cluster.job("sweep_4")
    assert (task.spec.array_id, task.spec.array_index, task.state) == ("sweep", 4, JobState.QUEUED)
    # and the tasks are enqueued in index order, each with its submitted event
    assert cluster.job("sweep_0").enqueued_at < cluster.job("sweep_2").enqueued_at < task.enqueued_at
    assert cluster.events("sweep_5000") == [("QUEUED", 0, "submitted")]


def test_an_array_whose_id_or_a_task_id_is_taken_is_refused_whole(cluster):
    # Given a job "x" and a job "y_3"
    cluster.submit("x")
    cluster.submit("y_3")
    # Then an array "x" and an array "y" with index 3 are refused, storing nothing
    with pytest.raises(DuplicateJob):
        submit_array(cluster, "x", "0-3")
    with pytest.raises(DuplicateJob):
        submit_array(cluster, "y", "0-9")
    with cluster.sessions() as s, pytest.raises(JobNotFound):
        array_store.get_array(s, "y")
    with pytest.raises(JobNotFound):
        cluster.job("y_0")


def test_the_pass_runs_at_most_n_tasks_of_an_array_and_the_rest_wait_saying_why(cluster, settings):
    # Given 8 free GPUs and a 10-task array of one GPU each, at most 3 at once
    cluster.node("node-a", gpus=8)
    submit_array(cluster, "a1", "0-9%3", gpus=1)
    # When a pass runs
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(1)).runs
    # Then the first three tasks are placed, and the others wait at the limit
    assert sorted(m.job_id for m in placed) == ["a1_0", "a1_1", "a1_2"]
    assert cluster.job("a1_3").reason == "array a1 at its limit: 3 running"
    # When another pass runs with nothing ended, nothing more is placed
    assert schedule_pass(cluster.sessions, settings, now=T0 + seconds(2)).runs == []
    # When one task ends, the next pass places exactly one more, the next in index order
    cluster.start("a1_1", at=T0 + seconds(2))
    end(cluster, "a1_1", JobState.DONE, at=T0 + seconds(3))
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(4)).runs
    assert [m.job_id for m in placed] == ["a1_3"]
    with cluster.sessions() as s:
        assert array_store.get_array(s, "a1").counts == {"QUEUED": 6, "PLACED": 3, "DONE": 1}


def test_cancelling_an_array_ends_every_task_that_has_not_ended(cluster, settings):
    cluster.node("node-a", gpus=2)
    submit_array(cluster, "a2", "0-4", gpus=1)
    schedule_pass(cluster.sessions, settings, now=T0 + seconds(1))
    cluster.start("a2_0", at=T0 + seconds(2))
    end(cluster, "a2_1", JobState.DONE, at=T0 + seconds(2))
    # When the array is cancelled
    with cluster.sessions.begin() as s:
        told = array_store.cancel_array(s, "a2", now=T0 + seconds(3))
    # Then the running task is cancelled (its agent is to be told) and the queued ones too
    assert [j.job_id for j in told] == ["a2_0"]
    with cluster.sessions() as s:
        assert array_store.get_array(s, "a2").counts == {"CANCELLED": 4, "DONE": 1}
    assert cluster.events("a2_4")[-1] == ("CANCELLED", 0, "cancelled by user")


def test_a_job_waits_for_its_dependency_and_starts_after_it_is_done(cluster, settings):
    cluster.node("node-a", gpus=2)
    cluster.submit("train-1", gpus=1)
    submit_after(cluster, "eval", {"afterok": ["train-1"]}, gpus=1)
    # When a pass runs, train-1 is placed and eval waits, saying for what
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(1)).runs
    assert [m.job_id for m in placed] == ["train-1"]
    assert cluster.job("eval").reason == "waiting for train-1 (afterok)"
    # When train-1 ends DONE, the next pass places eval
    end(cluster, "train-1", JobState.DONE, at=T0 + seconds(2))
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(3)).runs
    assert [m.job_id for m in placed] == ["eval"]


def test_a_dependency_never_satisfied_cancels_its_dependents_transitively(cluster, settings):
    cluster.node("node-a", gpus=2)
    cluster.submit("train-1", gpus=1)
    submit_after(cluster, "eval", {"afterok": ["train-1"]})
    submit_after(cluster, "report", {"afterok": ["eval"]})
    submit_after(cluster, "alert", {"afternotok": ["train-1"]})
    submit_after(cluster, "cleanup", {"afterany": ["eval"]})
    schedule_pass(cluster.sessions, settings, now=T0 + seconds(1))
    # When train-1 fails
    end(cluster, "train-1", JobState.FAILED, at=T0 + seconds(2))
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(3)).runs
    # Then eval and, through it, report end CANCELLED, saying why; alert and cleanup run
    assert (cluster.job("eval").state, cluster.job("eval").reason) == (
        JobState.CANCELLED, "dependency never satisfied: train-1 FAILED")
    assert (cluster.job("report").state, cluster.job("report").reason) == (
        JobState.CANCELLED, "dependency never satisfied: eval CANCELLED")
    assert sorted(m.job_id for m in placed) == ["alert", "cleanup"]


def test_an_array_dependency_waits_for_all_its_tasks(cluster, settings):
    cluster.node("node-a", gpus=4)
    submit_array(cluster, "prep", "0-2", gpus=1)
    submit_after(cluster, "train", {"afterok": ["prep"]}, gpus=1)
    schedule_pass(cluster.sessions, settings, now=T0 + seconds(1))
    end(cluster, "prep_0", JobState.DONE, at=T0 + seconds(2))
    end(cluster, "prep_1", JobState.DONE, at=T0 + seconds(2))
    assert schedule_pass(cluster.sessions, settings, now=T0 + seconds(3)).runs == []
    assert cluster.job("train").reason == "waiting for prep (afterok)"
    end(cluster, "prep_2", JobState.DONE, at=T0 + seconds(4))
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(5)).runs
    assert [m.job_id for m in placed] == ["train"]


def test_an_array_may_depend_on_a_job_and_each_task_waits(cluster, settings):
    cluster.node("node-a", gpus=4)
    cluster.submit("prep")
    submit_array(cluster, "sweep", "0-1", needs={"afterok": ["prep"]}, gpus=1)
    schedule_pass(cluster.sessions, settings, now=T0 + seconds(1))
    assert cluster.job("sweep_1").reason == "waiting for prep (afterok)"
    end(cluster, "prep", JobState.DONE, at=T0 + seconds(2))
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(3)).runs
    assert sorted(m.job_id for m in placed) == ["sweep_0", "sweep_1"]


def test_unknown_ids_and_cycles_are_refused_naming_them(cluster):
    cluster.submit("train-1")
    with pytest.raises(InvalidField) as unknown:
        submit_after(cluster, "eval", {"afterok": ["train-1", "nope", "nada"]})
    assert unknown.value.fields["unknown"] == ["nada", "nope"]
    assert "depends_on" in unknown.value.fields
    with pytest.raises(InvalidField, match="cycle: self -> self"):
        submit_after(cluster, "self", {"afterany": ["self"]})
    # Given b waiting on a, and a then removed (retention) and its id submitted again,
    # waiting on b: a cycle a -> b -> a
    cluster.submit("a")
    submit_after(cluster, "b", {"afterok": ["a"]})
    with cluster.sessions.begin() as s:
        s.execute(delete(JobRow).where(JobRow.job_id == "a"))
    with pytest.raises(InvalidField, match="cycle: a -> b -> a"):
        submit_after(cluster, "a", {"afterok": ["b"]})
    with pytest.raises(JobNotFound):
        cluster.job("eval")


def test_a_pass_reads_only_the_tasks_within_an_arrays_room_and_says_why_the_rest_wait(cluster, settings):
    # Given a plain job and a 1,000-task array at most 2 at once, one of them running
    cluster.node("node-a", gpus=1)
    cluster.submit("plain", gpus=0)
    submit_array(cluster, "big", "0-999%2", gpus=1)
    with cluster.sessions.begin() as s:
        first = sorted(j.job_id for j in queued_for_pass(s))
    # Then a pass reads the plain job and the first two tasks only
    assert first == ["big_0", "big_1", "plain"]
    schedule_pass(cluster.sessions, settings, now=T0 + seconds(1))
    # and the tasks it did not read wait at the limit, the one read but not placed for GPUs
    assert cluster.job("big_999").reason == "array big at its limit: 2 running"
    assert cluster.job("big_1").reason.startswith("needs 1 GPU")
    with cluster.sessions.begin() as s:
        assert sorted(j.job_id for j in queued_for_pass(s)) == ["big_1"]
