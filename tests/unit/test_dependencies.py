"""Dependency rules: what afterok, afterany and afternotok allow given their targets'
outcomes (jobs and arrays), and cycles found across the existing graph."""

from __future__ import annotations

import pytest

from overlay.dependencies import (
    Dependency,
    Kind,
    Never,
    Outcome,
    Ready,
    Wait,
    find_cycle,
    judge,
    parse,
)
from overlay.states import JobState

RUNNING = Outcome.of({JobState.RUNNING: 1})
DONE = Outcome.of({JobState.DONE: 1})
FAILED = Outcome.of({JobState.FAILED: 1})
CANCELLED = Outcome.of({JobState.CANCELLED: 1})


def dep(kind: str, target: str = "t") -> list[Dependency]:
    return [Dependency(kind=Kind(kind), target=target)]


@pytest.mark.parametrize("kind, outcome, verdict", [
    ("afterok", RUNNING, Wait), ("afterok", DONE, Ready), ("afterok", FAILED, Never),
    ("afterok", CANCELLED, Never),
    ("afterany", RUNNING, Wait), ("afterany", DONE, Ready), ("afterany", FAILED, Ready),
    ("afternotok", RUNNING, Wait), ("afternotok", DONE, Never), ("afternotok", FAILED, Ready),
    ("afternotok", CANCELLED, Ready),
])
def test_each_kind_against_each_outcome_of_one_job(kind, outcome, verdict):
    assert isinstance(judge(dep(kind), {"t": outcome}), verdict)


def test_reasons_name_the_target_and_the_kind_or_how_it_ended():
    assert judge(dep("afterok", "train-1"), {"train-1": RUNNING}) == Wait(
        reason="waiting for train-1 (afterok)")
    assert judge(dep("afterok", "train-1"), {"train-1": FAILED}) == Never(
        reason="dependency never satisfied: train-1 FAILED")
    assert judge(dep("afternotok", "t"), {"t": DONE}) == Never(reason="dependency never satisfied: t DONE")
    assert judge(dep("afterok", "gone"), {}) == Never(
        reason="dependency never satisfied: gone no longer exists")


def test_an_array_target_is_all_its_tasks():
    half = Outcome.of({JobState.DONE: 3, JobState.RUNNING: 2})
    assert isinstance(judge(dep("afterok"), {"t": half}), Wait)
    assert isinstance(judge(dep("afterok"), {"t": Outcome.of({JobState.DONE: 5})}), Ready)
    # one task failed: afterok can never be met, even while others run
    one_failed = Outcome.of({JobState.FAILED: 1, JobState.RUNNING: 4})
    assert isinstance(judge(dep("afterok"), {"t": one_failed}), Never)
    # afternotok waits for every task, then needs one that did not end DONE
    assert isinstance(judge(dep("afternotok"), {"t": one_failed}), Wait)
    all_ended = Outcome.of({JobState.FAILED: 1, JobState.DONE: 4})
    assert isinstance(judge(dep("afternotok"), {"t": all_ended}), Ready)


def test_never_wins_over_wait_and_every_dependency_must_be_met():
    deps = dep("afterok", "a") + dep("afterok", "b")
    assert isinstance(judge(deps, {"a": RUNNING, "b": FAILED}), Never)
    assert judge(deps, {"a": RUNNING, "b": RUNNING}) == Wait(reason="waiting for a (afterok), b (afterok)")
    assert isinstance(judge(deps, {"a": DONE, "b": DONE}), Ready)


def test_parse_keeps_each_kind_and_target_once():
    assert parse({"afterok": ["a", "a"], "afterany": ["a"]}) == [
        Dependency(kind=Kind.AFTEROK, target="a"), Dependency(kind=Kind.AFTERANY, target="a")]


def test_find_cycle_follows_the_graph_a_level_at_a_time():
    graph = {"b": ["c"], "c": ["d", "x"], "d": []}
    asked: list[list[str]] = []

    def depends_of(ids):
        asked.append(sorted(ids))
        return {i: graph.get(i, []) for i in ids}

    assert find_cycle({"x"}, ["b"], depends_of) == ["b", "c", "x"]
    assert find_cycle({"y"}, ["b"], depends_of) is None
    assert find_cycle({"b"}, ["b"], depends_of) == ["b"]
    assert asked[0] == ["b"] and ["c"] in asked
