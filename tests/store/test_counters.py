"""The job counters behind /metrics and the list totals: exact, never lowered, cheap to read.

Triggers keep them in the transaction of each change (migration 0004); these tests compare
them with a recount of the rows after a life of jobs, delete rows, and fold while another
transaction is open.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, text

from overlay.model import JobSpec
from overlay.states import JobState
from overlay.store import counters as counter_store
from overlay.store import jobs as job_store
from overlay.store import stats
from overlay.store.tables import JobEventRow, JobRow
from tests.store.world import T0, Cluster, seconds
from web.metrics import DURATION_BUCKETS


def recount(s) -> dict[str, object]:
    """What the counters should say, counted from the rows themselves."""
    by_state = dict(s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all())
    entered = dict(s.execute(select(JobEventRow.to_state, func.count()).group_by(JobEventRow.to_state)).all())
    return {
        "jobs": {st: by_state.get(st, 0) for st in JobState},
        "entered": {st: entered.get(st.value, 0) for st in JobState},
        "submitted": s.scalar(select(func.count()).where(JobEventRow.from_state.is_(None))),
    }


def counted(s) -> dict[str, object]:
    c = stats.counters(s)
    return {"jobs": c.jobs_by_state(), "entered": c.entered(), "submitted": c.submitted()}


def a_life_of_jobs(cluster: Cluster) -> None:
    """Jobs that end DONE, FAILED, CANCELLED (queued and running), are retried, and wait."""
    cluster.node("node-a", gpus=4)
    cluster.running("done", on="node-a", gpus=(0,), at=T0)
    cluster.running("failed", on="node-a", gpus=(1,), at=T0)
    cluster.running("cancelled-running", on="node-a", gpus=(2,), at=T0)
    cluster.submit("cancelled-queued", at=T0)
    cluster.running("retried", on="node-a", gpus=(3,), at=T0, max_retries=1)
    cluster.submit("waiting", at=T0)
    with cluster.sessions.begin() as s:
        job_store.transition(s, "done", JobState.DONE, now=T0 + seconds(5))
        job_store.transition(s, "failed", JobState.FAILED, now=T0 + seconds(6), reason="exit 1")
        job_store.transition(s, "retried", JobState.QUEUED, now=T0 + seconds(7), reason="node lost")
    cluster.cancel("cancelled-running", at=T0 + seconds(8))
    cluster.cancel("cancelled-queued", at=T0 + seconds(8))
    cluster.place("retried", on="node-a", gpus=(0,), at=T0 + seconds(70))


def test_the_counters_agree_with_a_recount_of_the_rows(cluster):
    # Given a life of jobs: every kind of transition, a retry among them
    a_life_of_jobs(cluster)
    # Then the counters say what counting the rows says, before and after a fold
    with cluster.sessions.begin() as s:
        assert counted(s) == recount(s)
        assert counted(s) == recount(s)
        assert s.scalar(text("select count(*) from job_counter_deltas")) == 0  # the scrape folded them


def test_the_histograms_observe_each_placement_and_each_start(cluster):
    a_life_of_jobs(cluster)
    with cluster.sessions.begin() as s:
        placed = stats.counters(s).histogram("placement_latency", DURATION_BUCKETS)
        started = stats.counters(s).histogram("queue_wait", DURATION_BUCKETS)
    # Four jobs placed at once, and the retried one placed again 70 s after its submit
    assert placed.count == 5 and placed.sum == 70.0
    assert placed.cumulative[0] == 4 and placed.cumulative[DURATION_BUCKETS.index(60)] == 4
    assert placed.cumulative[DURATION_BUCKETS.index(120)] == 5
    assert started.count == 4 and started.sum == 0.0


def test_deleting_rows_lowers_the_gauge_but_no_counter(cluster):
    # Given a life of jobs, counted
    a_life_of_jobs(cluster)
    with cluster.sessions.begin() as s:
        before = stats.counters(s)
    # When the ended jobs are deleted (as retention does), events with them
    with cluster.sessions.begin() as s:
        s.execute(delete(JobRow).where(JobRow.state.in_([JobState.DONE, JobState.FAILED])))
    with cluster.sessions.begin() as s:
        after = stats.counters(s)
    # Then the jobs that are gone leave the gauge; the counters of what happened stay
    assert after.jobs_by_state()[JobState.DONE] == 0 and after.jobs_by_state()[JobState.FAILED] == 0
    assert after.jobs_by_state()[JobState.QUEUED] == before.jobs_by_state()[JobState.QUEUED]
    assert after.entered() == before.entered()
    assert after.submitted() == before.submitted() == 6
    assert after.histogram("queue_wait", DURATION_BUCKETS) == before.histogram("queue_wait", DURATION_BUCKETS)


def test_a_submit_committed_during_a_fold_is_counted_once(cluster):
    # Given a submit whose transaction is still open
    with cluster.sessions() as submitter, cluster.sessions() as folder:
        job_store.insert_job(submitter, spec("late"), now=T0)
        submitter.flush()
        # When another transaction folds the deltas and commits meanwhile
        with folder.begin():
            assert counter_store.compact(folder)
        # And then the submit commits
        submitter.commit()
    # Then it is counted, once, and stays counted after further folds
    for _ in range(2):
        with cluster.sessions.begin() as s:
            assert stats.counters(s).submitted() == 1
            assert stats.counters(s).jobs_by_state()[JobState.QUEUED] == 1


def test_a_second_fold_at_once_skips_instead_of_waiting(cluster):
    cluster.submit("one", at=T0)
    with cluster.sessions() as first, cluster.sessions() as second, first.begin():
        assert counter_store.compact(first)
        # While the first fold's transaction is open, a second one does not wait for it
        with second.begin():
            assert not counter_store.compact(second)
            # and still reads the exact count (the first fold is not committed yet)
            assert stats.counters(second).submitted() == 1


def test_the_database_buckets_with_the_bounds_the_api_reports(cluster):
    with cluster.sessions() as s:
        for bound in DURATION_BUCKETS:
            assert float(s.scalar(text("select overlay_le(:v)"), {"v": bound})) == bound
            above = s.scalar(text("select overlay_le(:v)"), {"v": bound + 0.001})
            assert above == "+Inf" or float(above) > bound
        assert s.scalar(text("select overlay_le(-1)")) == str(DURATION_BUCKETS[0])


def spec(job_id: str) -> JobSpec:
    return JobSpec(job_id=job_id, cmd=("true",))
