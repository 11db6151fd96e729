"""The scheduler's copy of the queue (overlay/store/holds.py ``QueuedJobs``): a pass reads
through it the same jobs as a whole read would, as they are now, and decodes again only
rows that changed."""

from __future__ import annotations

from overlay.arrays import parse_array
from overlay.model import JobSpec
from overlay.states import JobState
from overlay.store import arrays as array_store
from overlay.store import jobs as job_store
from overlay.store.holds import QueuedJobs, queued_for_pass
from tests.store.world import T0, seconds
from workers.scheduler import schedule_pass


def read_both(cluster, cache: QueuedJobs):
    """(through the cache, whole), each by job id."""
    with cluster.sessions.begin() as s:
        cached = {j.job_id: j for j in queued_for_pass(s, cache)}
    with cluster.sessions.begin() as s:
        whole = {j.job_id: j for j in queued_for_pass(s)}
    return cached, whole


def test_a_cached_read_is_the_queue_as_it_is_now_and_reuses_only_rows_that_did_not_change(cluster):
    # Given three queued jobs, read once through a cache
    cluster.node("node-a", gpus=2)
    for job_id in ("a", "b", "c"):
        cluster.submit(job_id, gpus=1, priority=1)
    cache = QueuedJobs()
    first, whole = read_both(cluster, cache)
    assert first == whole and sorted(first) == ["a", "b", "c"]

    # When one job's reason changes, one is placed, one is cancelled and a new one comes
    with cluster.sessions.begin() as s:
        job_store.set_waiting_reasons(s, {"a": "needs 1 GPU: every GPU is taken"})
    cluster.place("b", on="node-a", gpus=(0,), at=T0 + seconds(1))
    cluster.submit("d", gpus=2, priority=5)
    cluster.submit("e", gpus=1)
    cluster.cancel("e", at=T0 + seconds(2))
    second, whole = read_both(cluster, cache)

    # Then the cached read is the whole read: the changed row as it is now, the placed and
    # cancelled jobs gone, the new one there
    assert second == whole
    assert sorted(second) == ["a", "c", "d"]
    assert second["a"].reason == "needs 1 GPU: every GPU is taken"
    assert second["d"].spec.gpus == 2 and second["d"].spec.priority == 5
    # and the unchanged row was not decoded again (the very object), the changed one was
    assert second["c"] is first["c"]
    assert second["a"] is not first["a"]


def test_a_job_requeued_after_leaving_the_queue_is_read_as_it_is_now(cluster):
    # Given a job read through the cache, then placed (so it leaves the cache)
    cluster.node("node-a", gpus=1)
    cluster.submit("j", gpus=1)
    cache = QueuedJobs()
    read_both(cluster, cache)
    cluster.place("j", on="node-a", gpus=(0,), at=T0 + seconds(1))
    assert read_both(cluster, cache) == ({}, {})
    # When its attempt is given up and it is queued again
    with cluster.sessions.begin() as s:
        job_store.transition(s, "j", JobState.QUEUED, now=T0 + seconds(2), reason="node-a lost; retry 1",
                             attempt=1)
    again, whole = read_both(cluster, cache)
    # Then the cached read has it as it is now: its new attempt and reason
    assert again == whole
    assert again["j"].attempt == 1 and again["j"].reason == "node-a lost; retry 1"


def test_an_arrays_room_is_read_through_the_cache_as_a_whole_read_has_it(cluster, settings):
    # Given a 50-task array at most 2 at once on a node with one GPU, read through a cache
    cluster.node("node-a", gpus=1)
    with cluster.sessions.begin() as s:
        array_store.insert_array(s, JobSpec(job_id="sweep", cmd=("sweep",), gpus=1), parse_array("0-49%2"),
                                 expression="0-49%2", now=T0)
    cache = QueuedJobs()
    first, whole = read_both(cluster, cache)
    assert first == whole and sorted(first) == ["sweep_0", "sweep_1"]
    # When a pass places the first task (its room is now one task)
    placed = schedule_pass(cluster.sessions, settings, now=T0 + seconds(1), queue=cache)
    assert [m.job_id for m in placed.runs] == ["sweep_0"]
    # Then the cache and a whole read agree on the one task left in the room
    second, whole = read_both(cluster, cache)
    assert second == whole and sorted(second) == ["sweep_1"]
