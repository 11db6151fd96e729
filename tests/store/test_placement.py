"""Recording a placement: the GPUs are held in the same transaction that makes the job
PLACED, and the allocations' primary key refuses a GPU someone else holds."""

from __future__ import annotations

import pytest

from overlay.errors import GpuTaken
from overlay.states import JobState
from tests.store.world import T0, race


def test_a_committed_placement_holds_its_gpus_and_starts_attempt_one(cluster):
    # Given node-a with four GPUs and a queued two-GPU job
    cluster.node("node-a", gpus=4)
    cluster.submit("j", gpus=2)
    # When the scheduler places it on GPUs 1 and 3
    cluster.place("j", on="node-a", gpus=(1, 3))
    # Then the job is PLACED there as attempt 1, and exactly those GPUs are its
    placed = cluster.job("j")
    assert (placed.state, placed.node, placed.gpus, placed.attempt) == (JobState.PLACED, "node-a", (1, 3), 1)
    assert placed.placed_at == T0
    assert cluster.holders("node-a") == {1: ("j", 1), 3: ("j", 1)}
    assert cluster.events("j")[-1] == ("PLACED", 1, None)


def test_placing_on_a_gpu_another_job_holds_raises_gpu_taken_and_changes_nothing(cluster):
    # Given job a holding GPU 0 of node-a, and job b queued
    cluster.node("node-a", gpus=2)
    cluster.submit("a", gpus=1)
    cluster.place("a", on="node-a", gpus=(0,))
    cluster.submit("b", gpus=2)
    # When b is placed on GPUs 0 and 1
    with pytest.raises(GpuTaken):
        cluster.place("b", on="node-a", gpus=(0, 1))
    # Then b is still QUEUED at attempt 0, and GPU 1 was not taken half-way
    assert (cluster.job("b").state, cluster.job("b").attempt) == (JobState.QUEUED, 0)
    assert cluster.holders("node-a") == {0: ("a", 1)}
    assert [state for state, _, _ in cluster.events("b")] == ["QUEUED"]


def test_two_sessions_placing_two_jobs_on_one_gpu_at_once_book_it_once(cluster):
    # Given two queued jobs and one free GPU
    cluster.node("node-a", gpus=1)
    cluster.submit("a", gpus=1)
    cluster.submit("b", gpus=1)
    # When two transactions place each on GPU 0 at the same moment
    results = race(lambda: cluster.place("a", on="node-a", gpus=(0,)),
                   lambda: cluster.place("b", on="node-a", gpus=(0,)))
    # Then exactly one wins; the other gets GpuTaken and its job stays QUEUED
    taken = [r for r in results if isinstance(r, GpuTaken)]
    assert len(taken) == 1, results
    winner, loser = ("a", "b") if results[1] is taken[0] else ("b", "a")
    assert cluster.holders("node-a") == {0: (winner, 1)}
    assert cluster.job(winner).state is JobState.PLACED
    assert cluster.job(loser).state is JobState.QUEUED
