"""A pass's one-node placements written together (overlay/store/placing.py): the same rows,
events and counters as one ``jobs.place`` per job, a GPU held by another refused without
leaving anything half held, and a job cancelled since the pass read it left alone."""

from __future__ import annotations

from overlay.model import Placement
from overlay.states import JobState
from overlay.store import jobs as job_store
from overlay.store import placing, stats
from overlay.store.placing import Wanted
from tests.store.world import T0, Cluster, seconds
from workers.scheduler import schedule_pass


def test_placed_together_a_job_looks_as_if_placed_alone(cluster: Cluster, settings):
    # Given a queue placed once one job at a time, then put back and placed again batched
    cluster.node("n1", gpus=4)
    for i in range(3):
        cluster.submit(f"j{i}", gpus=1 + (i == 2), at=T0 + seconds(i), priority=i)
    one_by_one = schedule_pass(cluster.sessions, settings, now=T0 + seconds(5), batch=False)
    alone = {j: cluster.job(j) for j in ("j0", "j1", "j2")}
    held_alone = cluster.holders("n1")
    for j in alone:
        with cluster.sessions.begin() as s:
            job_store.transition(s, j, JobState.QUEUED, now=T0 + seconds(6), reason="test: again")
    batched = schedule_pass(cluster.sessions, settings, now=T0 + seconds(7))
    # Then the same jobs go to the same GPUs, their messages in the same order
    assert [(m.job_id, m.node) for m in batched.runs] == [(m.job_id, m.node) for m in one_by_one.runs]
    for j, job in alone.items():
        again = cluster.job(j)
        assert (again.state, again.node, again.gpus, again.attempt) == (job.state, job.node, job.gpus, 2)
        assert again.placed_at == T0 + seconds(7) and again.reason is None
        assert cluster.events(j)[-1] == ("PLACED", 2, None)
    assert cluster.holders("n1") == {i: (j, 2) for i, (j, _) in held_alone.items()}
    # And each placement counts once, as it did one at a time
    with cluster.sessions.begin() as s:
        assert stats.counters(s).entered()[JobState.PLACED] == 6


def test_a_job_whose_gpu_is_held_is_refused_whole_and_the_others_placed(cluster: Cluster):
    cluster.node("n1", gpus=4)
    cluster.submit("holder", gpus=1, at=T0)
    cluster.place("holder", on="n1", gpus=(1,), at=T0)
    cluster.submit("wants01", gpus=2, at=T0)
    cluster.submit("wants23", gpus=2, at=T0)
    with cluster.sessions.begin() as s:
        written = placing.place_many(s, [
            Wanted(job_id="wants01", placement=Placement(node="n1", gpus=(0, 1))),
            Wanted(job_id="wants23", placement=Placement(node="n1", gpus=(2, 3)), borrowed=True),
        ], now=T0 + seconds(1))
    assert [j.job_id for j in written.jobs] == ["wants23"]
    assert "already held" in written.refused["wants01"]
    # Nothing of the refused job is held (not even GPU 0, which was free), and it waits
    assert cluster.holders("n1") == {1: ("holder", 1), 2: ("wants23", 1), 3: ("wants23", 1)}
    assert cluster.job("wants01").state is JobState.QUEUED
    placed = cluster.job("wants23")
    assert (placed.state, placed.gpus, placed.borrowed, placed.attempt) == (JobState.PLACED, (2, 3), True, 1)


def test_a_job_cancelled_since_the_pass_read_it_is_left_alone(cluster: Cluster):
    cluster.node("n1", gpus=2)
    cluster.submit("gone", gpus=1, at=T0)
    cluster.submit("kept", gpus=1, at=T0)
    cluster.cancel("gone", at=T0)
    with cluster.sessions.begin() as s:
        written = placing.place_many(s, [Wanted(job_id="gone", placement=Placement(node="n1", gpus=(0,))),
                                         Wanted(job_id="kept", placement=Placement(node="n1", gpus=(1,)))],
                                     now=T0 + seconds(1))
    assert written.refused == {"gone": "it is no longer QUEUED"}
    assert cluster.job("gone").state is JobState.CANCELLED
    assert cluster.holders("n1") == {1: ("kept", 1)}


def test_each_placement_has_its_event_and_its_notify_and_comes_back_as_the_job_now(cluster: Cluster,
                                                                                   engine):
    import select as selectors

    cluster.node("n1", gpus=4)
    cluster.submit("a", gpus=1, at=T0)
    cluster.submit("b", gpus=2, at=T0)
    pooled = engine.raw_connection()  # a listener on the jobs' channel, closed after (not pooled)
    pooled.detach()
    raw = pooled.dbapi_connection
    try:
        raw.set_isolation_level(0)
        raw.cursor().execute(f"LISTEN {job_store.NOTIFY_CHANNEL}")
        with cluster.sessions.begin() as s:
            written = placing.place_many(s, [Wanted(job_id="a", placement=Placement(node="n1", gpus=(3,))),
                                             Wanted(job_id="b", placement=Placement(node="n1", gpus=(0, 1)))],
                                         now=T0 + seconds(1))
        heard: list[str] = []
        while len(heard) < 2 and selectors.select([raw], [], [], 5)[0]:
            raw.poll()
            heard += [n.payload for n in raw.notifies]
            raw.notifies.clear()
    finally:
        raw.close()
    # The NOTIFY of each placement was delivered at commit, and each job written is the job as read
    assert sorted(heard) == ["a PLACED", "b PLACED"]
    assert written.jobs == [cluster.job("a"), cluster.job("b")]
    # and its event says where, on which GPUs, as of which attempt
    with cluster.sessions() as s:
        last = {j: job_store.events(s, j)[-1] for j in ("a", "b")}
    at = T0 + seconds(1)
    assert [(e.to_state, e.from_state, e.node, e.gpu_indices, e.attempt, e.at) for e in last.values()] == [
        ("PLACED", "QUEUED", "n1", [3], 1, at), ("PLACED", "QUEUED", "n1", [0, 1], 1, at)]
