"""Preemption's plan (pure): who a waiting job may stop, the set on one node that loses the
least work, waiting for victims still stopping, and the quota check after the stop."""

from __future__ import annotations

from overlay.fleet import Fleet
from overlay.model import GpuDevice, JobSpec, NodeSnapshot, Placement
from overlay.preemption import (
    AwaitStop,
    Candidate,
    Preemption,
    Stopping,
    admission,
    choose,
    may_preempt,
    plan,
)
from overlay.quota import Quota, QuotaGate

GAP = 10


def node(name: str, *, gpus: int = 4, taken: tuple[int, ...] = (), model: str = "NVIDIA A100-SXM4-80GB",
         slots: int | None = None, running: int = 0) -> NodeSnapshot:
    return NodeSnapshot(name=name, taken=frozenset(taken), slots=slots, running=running, gpus=tuple(
        GpuDevice(index=i, uuid=f"{name}-{i}", name=model, memory_total_mb=81920) for i in range(gpus)))


def job(job_id: str = "big", *, gpus: int = 2, priority: int = 50, **kw) -> JobSpec:
    return JobSpec(job_id=job_id, cmd=("train",), gpus=gpus, priority=priority, **kw)


def running(job_id: str, node_name: str, *gpus: int, priority: int = 0, seconds: float = 100.0,
            **kw) -> Candidate:
    return Candidate(job_id=job_id, node=node_name, gpus=gpus, priority=priority,
                     gpu_seconds=len(gpus) * seconds, **kw)


def full(*nodes: tuple[str, int]) -> Fleet:
    return Fleet.from_snapshots([node(name, gpus=n, taken=tuple(range(n))) for name, n in nodes])


def test_only_preemptible_jobs_lower_by_the_gap_or_borrowed_may_be_stopped():
    big = job(priority=50)
    assert may_preempt(big, running("low", "a", 0, priority=40), gap=GAP)
    assert not may_preempt(big, running("close", "a", 0, priority=41), gap=GAP)
    assert may_preempt(big, running("borrowed", "a", 0, priority=90, borrowed=True), gap=GAP)
    assert not may_preempt(big, running("kept", "a", 0, priority=0, preemptible=False), gap=GAP)
    assert not may_preempt(big, running("kept", "a", 0, borrowed=True, preemptible=False), gap=GAP)


def test_the_set_on_one_node_with_the_least_lost_work_is_chosen():
    # Given two full 4-GPU nodes: on a, two 1-GPU jobs that ran long and one 2-GPU job that
    # ran briefly; on b, one 2-GPU job that ran a little longer than a's short one
    fleet = full(("a", 4), ("b", 4))
    candidates = [
        running("a-old0", "a", 0, seconds=5000), running("a-old1", "a", 1, seconds=5000),
        running("a-new", "a", 2, 3, seconds=10),
        running("b-mid", "b", 0, 1, seconds=20), running("b-old", "b", 2, 3, seconds=9000),
    ]
    # When a 2-GPU job plans
    found = plan(job(gpus=2), fleet, candidates, gap=GAP)
    # Then it stops a-new only: 20 GPU-seconds lost, against 40 on b or 10,000 for a's pair
    assert isinstance(found, Preemption)
    assert (found.node, [v.job_id for v in found.victims]) == ("a", ["a-new"])
    assert found.lost_gpu_seconds == 20
    # And the fleet is as it was
    assert fleet.free("a") == frozenset() and fleet.free("b") == frozenset()


def test_free_gpus_count_so_only_what_is_missing_is_stopped():
    fleet = Fleet.from_snapshots([node("a", gpus=4, taken=(0, 1, 2))])
    candidates = [running("x", "a", 0, seconds=1), running("y", "a", 1, 2, seconds=1)]
    found = plan(job(gpus=2), fleet, candidates, gap=GAP)
    assert isinstance(found, Preemption) and [v.job_id for v in found.victims] == ["x"]


def test_several_victims_are_stopped_when_no_single_one_frees_enough():
    fleet = full(("a", 4))
    candidates = [running(f"j{i}", "a", i, seconds=10 * (i + 1)) for i in range(4)]
    found = plan(job(gpus=3), fleet, candidates, gap=GAP)
    assert isinstance(found, Preemption)
    assert [v.job_id for v in found.victims] == ["j0", "j1", "j2"]


def test_no_preemption_when_stopping_every_eligible_job_would_not_make_room():
    # a's 4 GPUs: two jobs it may stop, two it may not (priority too close, not preemptible)
    fleet = full(("a", 4))
    candidates = [running("low", "a", 0), running("close", "a", 1, priority=45),
                  running("kept", "a", 2, preemptible=False), running("low2", "a", 3)]
    assert plan(job(gpus=3), fleet, candidates, gap=GAP) is None
    assert plan(job(gpus=2), fleet, candidates, gap=GAP) is not None


def test_a_job_whose_gpus_are_free_but_waits_for_something_else_stops_nobody():
    fleet = Fleet.from_snapshots([node("a", gpus=4, taken=(0,))])
    assert plan(job(gpus=2), fleet, [running("low", "a", 0)], gap=GAP) is None
    assert plan(job(gpus=0), full(("a", 4)), [running("low", "a", 0)], gap=GAP) is None


def test_victims_must_hold_gpus_of_the_model_asked_for():
    fleet = Fleet.from_snapshots([node("a", gpus=2, taken=(0, 1)),
                                  node("h", gpus=2, taken=(0, 1), model="NVIDIA H100 80GB HBM3")])
    candidates = [running("on-a", "a", 0, 1, seconds=1), running("on-h", "h", 0, 1, seconds=1000)]
    found = plan(job(gpus=2, gpu_model="h100"), fleet, candidates, gap=GAP)
    assert isinstance(found, Preemption) and found.node == "h"


def test_a_node_with_every_job_slot_busy_needs_a_victim_to_free_a_slot_too():
    # Given a node with one job slot, taken by a 1-GPU job, and one GPU free
    fleet = Fleet.from_snapshots([node("a", gpus=2, taken=(0,), slots=1, running=1)])
    # Then stopping the only job frees both its GPU and the slot
    found = plan(job(gpus=2), fleet, [running("low", "a", 0)], gap=GAP)
    assert isinstance(found, Preemption) and found.victims[0].job_id == "low"


def test_a_job_whose_victims_are_still_stopping_waits_for_them_and_stops_no_one_else():
    fleet = full(("a", 4))
    candidates = [running("other", "a", 2, 3, seconds=1)]
    stopping = [Stopping(job_id="v1", node="a", gpus=(0, 1), for_job="big")]
    found = plan(job(gpus=2), fleet, candidates, gap=GAP, stopping=stopping)
    assert isinstance(found, AwaitStop) and found.stopping == ("v1",)
    assert "waiting for v1 to stop on a" in found.describe()
    # But victims stopping for another job are not its own: it plans on what else runs
    theirs = [Stopping(job_id="v1", node="a", gpus=(0, 1), for_job="someone-else")]
    other = plan(job(gpus=2), fleet, candidates, gap=GAP, stopping=theirs)
    assert isinstance(other, Preemption) and [v.job_id for v in other.victims] == ["other"]


def test_many_candidates_on_a_node_are_chosen_greedily_by_lost_work():
    fleet = full(("a", 16))
    candidates = [running(f"j{i:02}", "a", i, seconds=100 - i) for i in range(16)]
    found = plan(job(gpus=2), fleet, candidates, gap=GAP)
    assert isinstance(found, Preemption)
    assert [v.job_id for v in found.victims] == ["j15", "j14"]


def test_a_preemption_is_admitted_only_if_the_jobs_quota_then_lets_it_run():
    # Given vision (quota 2) holding 2 GPUs of a full 4-GPU node and nlp (quota 2) holding 2
    snapshot = node("a", gpus=4, taken=(0, 1, 2, 3))
    held = [("vision", Placement(node="a", gpus=(0, 1))), ("nlp", Placement(node="a", gpus=(2, 3)))]
    gate = QuotaGate({"vision": Quota(gpus=2), "nlp": Quota(gpus=2)}, [snapshot], held)
    fleet = Fleet.from_snapshots([snapshot])
    nlp_job = running("nlp-low", "a", 2, 3, account="nlp")
    vision_low = running("vision-low", "a", 0, 1, account="vision")
    # When a vision job would stop nlp's jobs, vision would then be over its quota: refused
    over = Preemption(job_id="big", node="a", victims=(nlp_job,))
    assert admission(job(gpus=2, account="vision"), over, fleet, gate) is None
    # But stopping vision's own low job keeps vision within its quota
    within = Preemption(job_id="big", node="a", victims=(vision_low,))
    assert admission(job(gpus=2, account="vision"), within, fleet, gate) is not None
    # And the gate counts as it did before it was asked
    assert gate.holding("vision") == 2 and gate.holding("nlp") == 2


def test_a_job_that_would_borrow_stops_only_lower_priority_work_not_other_borrowers():
    # Given a full 4-GPU node: vision (quota 1) holds GPU 0, nlp (quota 1) holds GPU 1, and
    # two borrowed jobs of a third account hold GPUs 2 and 3; one of them is 20 lower in priority
    snapshot = node("a", gpus=4, taken=(0, 1, 2, 3))
    held = [("vision", Placement(node="a", gpus=(0,))), ("nlp", Placement(node="a", gpus=(1,))),
            ("lab", Placement(node="a", gpus=(2,))), ("lab", Placement(node="a", gpus=(3,)))]
    gate = QuotaGate({"vision": Quota(gpus=1), "nlp": Quota(gpus=1)}, [snapshot], held)
    fleet = Fleet.from_snapshots([snapshot])
    peer = running("lab-peer", "a", 2, priority=50, borrowed=True, account="lab", seconds=1)
    low = running("lab-low", "a", 3, priority=30, borrowed=True, account="lab", seconds=500)
    # When a vision job over its quota (it would borrow) looks for room
    found = choose(job("v", gpus=1, priority=50, account="vision"), fleet, [peer, low], gap=GAP, admit=gate)
    # Then it stops the lower-priority job, though the equal one lost less work: borrowed
    # work at its own priority is not fair game for another borrower
    assert isinstance(found, Preemption) and [v.job_id for v in found.victims] == ["lab-low"]
    # And with only the equal-priority borrower there, it stops nobody
    assert choose(job("v", gpus=1, priority=50, account="vision"), fleet, [peer], gap=GAP, admit=gate) is None
