"""Arrays and dependencies on real processes (API, scheduler, beat, two agents): an array of
5 with %2 runs each task once with its own index, never more than 2 at a time; a dependent
job starts only after its dependency is DONE."""

from __future__ import annotations

from datetime import datetime

import pytest
import requests

from tests.integration.harness import TERMINAL, job, logs, run_count, submit, wait_state

pytestmark = pytest.mark.slow


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def test_an_array_of_5_at_most_2_at_once_runs_each_task_once_with_its_index(two_nodes, sessions):
    script = "echo index=$OVERLAY_ARRAY_INDEX slurm=$SLURM_ARRAY_TASK_ID; sleep 0.5"
    created = submit(two_nodes, job_id="sweep", array="0-4%2", gpus=1, cmd=["sh", "-c", script])
    assert (created["size"], created["max_running"]) == (5, 2)
    tasks = [wait_state(two_nodes, f"sweep_{i}", TERMINAL, timeout=90) for i in range(5)]
    for i, task in enumerate(tasks):
        assert task["state"] == "DONE", task
        assert f"index={i} slurm={i}" in logs(two_nodes, f"sweep_{i}")
        assert run_count(sessions, f"sweep_{i}") == 1
    # Each task held its slot from placement to its end: no three of those spans overlap
    spans = [(at(t["timestamps"]["placed"]), at(t["timestamps"]["finished"])) for t in tasks]
    for placed, _ in spans:
        assert sum(1 for p, f in spans if p <= placed < f) <= 2
    shown = requests.get(f"{two_nodes.api}/api/arrays/sweep", timeout=10).json()
    assert shown["counts"] == {"DONE": 5}


def test_a_dependent_job_starts_only_after_its_dependency_is_done(two_nodes):
    submit(two_nodes, job_id="train-1", cmd=["sleep", "1"], gpus=1)
    submit(two_nodes, job_id="eval", cmd=["echo", "evaluated"], depends_on={"afterok": ["train-1"]})
    waiting = job(two_nodes, "eval")
    assert waiting["state"] == "QUEUED"
    train = wait_state(two_nodes, "train-1", TERMINAL, timeout=60)
    evaluated = wait_state(two_nodes, "eval", TERMINAL, timeout=60)
    assert (train["state"], evaluated["state"]) == ("DONE", "DONE")
    assert at(evaluated["timestamps"]["placed"]) >= at(train["timestamps"]["finished"])
    assert "evaluated" in logs(two_nodes, "eval")
