"""Queue order and the scheduling pass: priority then age, backfill, no double booking, the memo."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.fleet import Candidates, Fleet
from overlay.model import Job, NoFit, Placement
from overlay.policies import POLICIES, SUPPORTED, get_policy
from overlay.queueing import Decision, QueuedJob, plan_pass, queue_order
from overlay.states import JobState
from tests.unit.test_placement import job, node, oracle, snapshots, specs

T0 = datetime(2024, 1, 1)
FIRST = POLICIES["first-fit"]


def queued(job_id: str, gpus: int = 1, *, priority: int = 0, age_s: int = 0, **kw) -> QueuedJob:
    """A job enqueued ``age_s`` seconds after T0."""
    return QueuedJob(spec=job(gpus, job_id=job_id, priority=priority, **kw),
                     enqueued_at=T0 + timedelta(seconds=age_s))


def test_queue_order_is_priority_first_then_age_then_job_id():
    jobs = [queued("late", age_s=5), queued("urgent", priority=2, age_s=9),
            queued("b", age_s=1), queued("a", age_s=1), queued("undated", priority=2)]
    jobs[-1] = QueuedJob(spec=jobs[-1].spec, enqueued_at=None)
    assert [j.spec.job_id for j in queue_order(jobs)] == ["urgent", "undated", "a", "b", "late"]


def test_a_pass_places_in_queue_order_and_applies_each_placement():
    # Given one node with 4 free GPUs and three 2-GPU jobs, the oldest queued last
    jobs = [queued("new", 2, age_s=2), queued("mid", 2, age_s=1), queued("old", 2, age_s=0)]
    # When a pass runs
    decisions = plan_pass(jobs, Fleet.from_snapshots([node("a")]), policy=FIRST)
    # Then the two oldest get disjoint GPUs and the newest waits
    assert decisions[:2] == [Decision(job_id="old", outcome=Placement(node="a", gpus=(0, 1))),
                             Decision(job_id="mid", outcome=Placement(node="a", gpus=(2, 3)))]
    assert decisions[2].job_id == "new"
    assert isinstance(decisions[2].outcome, NoFit)


def test_a_big_job_that_does_not_fit_does_not_block_smaller_ones_behind_it():
    jobs = [queued("big", 8, priority=5), queued("small", 1)]
    outcomes = {d.job_id: d.outcome for d in plan_pass(jobs, Fleet.from_snapshots([node("a")]), policy=FIRST)}
    assert outcomes["big"] == NoFit(reason="needs 8 GPUs; the most any online node has: 4",
                                    details={"needs": 8, "most_total": 4})
    assert outcomes["small"] == Placement(node="a", gpus=(0,))


def test_a_pass_takes_stored_jobs():
    stored = Job(spec=job(1, job_id="s"), state=JobState.QUEUED, enqueued_at=T0)
    assert plan_pass([stored], Fleet.from_snapshots([node("a")]), policy=FIRST)[0].outcome.node == "a"


def test_a_shape_that_failed_is_not_asked_of_the_policy_again_while_capacity_is_unchanged():
    asked: list[Candidates] = []

    def counting(candidates: Candidates) -> str | None:
        asked.append(candidates)
        return FIRST(candidates)

    jobs = [queued(f"j{i}", 8, age_s=i) for i in range(5)]
    decisions = plan_pass(jobs, Fleet.from_snapshots([node("a")]), policy=counting)
    assert len(asked) == 1
    assert all(d.outcome == decisions[0].outcome for d in decisions)


def test_a_remembered_reason_is_refreshed_once_capacity_changes():
    jobs = [queued("j1", 3, age_s=0), queued("j2", 1, age_s=1), queued("j3", 3, age_s=2)]
    decisions = plan_pass(jobs, Fleet.from_snapshots([node("a", taken={0, 1})]), policy=FIRST)
    assert [d.outcome.reason for d in decisions if isinstance(d.outcome, NoFit)] == [
        "needs 3 GPUs; most free on one node: 2", "needs 3 GPUs; most free on one node: 1"]


def queues() -> st.SearchStrategy[list[QueuedJob]]:
    """Queued jobs with distinct ids and mixed priorities and ages; shapes repeat often."""
    entries = st.tuples(specs, st.integers(0, 2), st.integers(0, 5))
    return st.lists(entries, max_size=25).map(lambda rows: [
        QueuedJob(spec=replace(spec, job_id=f"j{i}", priority=p), enqueued_at=T0 + timedelta(seconds=age))
        for i, (spec, p, age) in enumerate(rows)
    ])


@settings(max_examples=200, deadline=None)
@given(snapshots(), queues(), st.sampled_from(SUPPORTED))
def test_a_pass_never_double_books_a_gpu(nodes, jobs, policy):
    decisions = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy))
    held = {(n.name, i) for n in nodes for i in n.taken}
    for d in decisions:
        if isinstance(d.outcome, Placement):
            given_now = {(d.outcome.node, i) for i in d.outcome.gpus}
            assert not given_now & held
            held |= given_now


@settings(max_examples=200, deadline=None)
@given(snapshots(), queues(), st.sampled_from(SUPPORTED))
def test_a_pass_decides_each_job_as_the_oracle_would_in_turn(nodes, jobs, policy):
    held = {n.name: set(n.taken) for n in nodes}
    running = {n.name: n.running for n in nodes}
    for d, q in zip(plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy)),
                    queue_order(jobs), strict=True):
        expected = oracle(nodes, held, q.spec, policy, running)
        assert d.job_id == q.spec.job_id
        assert (d.outcome if isinstance(d.outcome, Placement) else None) == expected
        if expected:
            held[expected.node] |= set(expected.gpus)
            running[expected.node] += 1


@settings(max_examples=200, deadline=None)
@given(snapshots(), queues(), st.sampled_from(SUPPORTED))
def test_the_shape_memo_does_not_change_any_decision_or_reason(nodes, jobs, policy):
    with_memo = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy))
    without = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy), memo=False)
    assert with_memo == without
