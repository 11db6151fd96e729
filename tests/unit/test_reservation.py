"""Backfill with a reservation: the first blocked job's earliest start, and who may go ahead of it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.fleet import Fleet
from overlay.model import JobSpec, NodeSnapshot, NodeState, NoFit, Placement
from overlay.policies import SUPPORTED, get_policy
from overlay.queueing import QueuedJob, plan_pass, queue_order
from overlay.reservation import Reservation, Running, reserve
from tests.unit.test_placement import A100, L4, fitting, job, node, snapshots, specs
from tests.unit.test_queueing import FIRST, T0, queued

NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def running(name: str, gpus: tuple[int, ...], minutes: float | None) -> Running:
    end = None if minutes is None else NOW + timedelta(minutes=minutes)
    return Running(node=name, gpus=gpus, ends_at=end)


def outcomes(jobs, nodes, run, *, policy=FIRST):
    decisions = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=policy, running=run, now=NOW)
    return {d.job_id: d for d in decisions}


def test_the_blocked_job_is_reserved_where_enough_gpus_free_first():
    # Given node a: GPU 0 free, GPUs 1-3 held until +10, +20 and +40 min; node b: all held until +30
    nodes = [node("a", taken={1, 2, 3}), node("b", taken={0, 1, 2, 3})]
    run = [running("a", (1,), 10), running("a", (2,), 20), running("a", (3,), 40),
           running("b", (0, 1, 2, 3), 30)]
    # When a 4-GPU job waits
    d = outcomes([queued("big", 4)], nodes, run)["big"]
    # Then it is reserved on b from +30 min, and its reason says so
    assert d.reservation == Reservation(job_id="big", node="b", gpus=(0, 1, 2, 3),
                                        starts_at=NOW + timedelta(minutes=30))
    assert isinstance(d.outcome, NoFit)
    assert d.outcome.reason == "needs 4 GPUs; most free on one node: 1; reserved b from 2026-11-30T21:30:00Z"
    assert d.outcome.details["reserved_node"] == "b"


def test_only_jobs_that_end_before_the_reservation_may_use_its_free_gpus():
    # Given node a with GPU 0 free and GPUs 1-3 held for 30 more minutes
    nodes = [node("a", taken={1, 2, 3})]
    run = [running("a", (1, 2, 3), 30)]
    jobs = [queued("big", 4, priority=5), queued("long", 1, age_s=1),
            queued("too-long", 1, age_s=2, timeout_s=3600), queued("short", 1, age_s=3, timeout_s=600)]
    # When a pass runs with reservations
    d = outcomes(jobs, nodes, run)
    # Then the 1-GPU jobs that would outlast the reservation wait, and the short one backfills
    assert d["big"].reservation is not None and d["big"].reservation.starts_at == NOW + timedelta(minutes=30)
    assert isinstance(d["long"].outcome, NoFit) and isinstance(d["too-long"].outcome, NoFit)
    assert d["short"].outcome == Placement(node="a", gpus=(0,))
    # And without them, the first small job takes the GPU as before
    today = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=FIRST)
    assert today[1].outcome == Placement(node="a", gpus=(0,))


def test_a_job_without_timeout_may_use_gpus_the_reservation_does_not_need():
    # Given node a (4 GPUs, 2 free) and node b (4 GPUs, all free but one held for an hour)
    nodes = [node("a", taken={0, 1}), node("b", taken={0})]
    run = [running("a", (0, 1), 10), running("b", (0,), 60)]
    jobs = [queued("big", 4, priority=5), queued("long", 2, age_s=1), queued("long-2", 2, age_s=2)]
    d = outcomes(jobs, nodes, run)
    # Then big is reserved on a (GPUs 0, 1 busy first, then 2, 3): the long jobs go to b, then wait
    assert d["big"].reservation == Reservation(job_id="big", node="a", gpus=(0, 1, 2, 3),
                                               starts_at=NOW + timedelta(minutes=10))
    assert d["long"].outcome == Placement(node="b", gpus=(1, 2))
    assert isinstance(d["long-2"].outcome, NoFit)


def test_gpus_beyond_what_the_reservation_needs_stay_open_to_any_job():
    # Given node a with 8 GPUs, 0-3 free, 4-7 held for 20 minutes, and a 6-GPU job waiting
    nodes = [node("a", 8, taken={4, 5, 6, 7})]
    d = outcomes([queued("big", 6, priority=1), queued("long", 2)], nodes, [running("a", (4, 5, 6, 7), 20)])
    # Then the reservation takes 4-7 and two free ones; the other two free GPUs are backfilled
    assert d["big"].reservation is not None and d["big"].reservation.gpus == (0, 1, 4, 5, 6, 7)
    assert d["long"].outcome == Placement(node="a", gpus=(2, 3))


def test_jobs_without_timeout_count_as_never_ending():
    # Given node a held by a job with no timeout
    nodes = [node("a", taken={0, 1, 2, 3})]
    d = outcomes([queued("big", 4)], nodes, [running("a", (0, 1, 2, 3), None)])
    # Then there is no reservation to promise, and the reason is today's
    assert d["big"].reservation is None
    assert d["big"].outcome == NoFit(reason="needs 4 GPUs; most free on one node: 0",
                                     details={"needs": 4, "most_free": 0})


def test_a_job_no_node_could_ever_hold_leaves_the_reservation_to_the_next():
    nodes = [node("a", taken={0, 1})]
    jobs = [queued("huge", 8, priority=9), queued("big", 4, priority=5), queued("long", 2)]
    d = outcomes(jobs, nodes, [running("a", (0, 1), 5)])
    assert d["huge"].reservation is None
    assert d["big"].reservation is not None and d["big"].reservation.node == "a"
    assert isinstance(d["long"].outcome, NoFit)


def test_jobs_placed_earlier_in_the_pass_count_with_their_timeouts():
    # Given an idle 4-GPU node and, in queue order, a 3-GPU job of 15 minutes, then a 4-GPU job
    jobs = [queued("first", 3, priority=9, timeout_s=900), queued("big", 4, priority=5), queued("long", 1)]
    d = outcomes(jobs, [node("a")], [])
    # Then big is reserved from when first ends, and a job without timeout does not take GPU 3
    assert d["first"].outcome == Placement(node="a", gpus=(0, 1, 2))
    assert d["big"].reservation is not None and d["big"].reservation.starts_at == NOW + timedelta(minutes=15)
    assert isinstance(d["long"].outcome, NoFit)


def test_running_ends_in_the_past_count_as_now():
    nodes = [node("a", taken={0})]
    r = reserve(job(4, job_id="big"), Fleet.from_snapshots(nodes), [running("a", (0,), -5)], now=NOW)
    assert r is not None and r.starts_at == NOW


def test_the_pass_leaves_no_gpu_held_for_the_reservation():
    fleet = Fleet.from_snapshots([node("a", taken={1, 2, 3})])
    plan_pass([queued("big", 4), queued("long", 1, age_s=1)], fleet, policy=FIRST,
              running=[running("a", (1, 2, 3), 30)], now=NOW)
    assert fleet.free("a") == {0}


# -- properties -----------------------------------------------------------------------------

@st.composite
def busy_nodes(draw) -> list[NodeSnapshot]:
    """Up to 4 mostly online nodes of 2 to 8 GPUs (A100 or L4), most of them held."""
    nodes = []
    for name in draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True)):
        count = draw(st.integers(2, 8))
        nodes.append(node(name, count, draw(st.sampled_from([A100, L4])),
                          taken=set(range(draw(st.integers(0, count)))),
                          labels=draw(st.sampled_from([{}, {"zone": "x"}])),
                          state=draw(st.sampled_from([NodeState.ONLINE] * 4 + [NodeState.DRAINING]))))
    return nodes


busy_specs = st.builds(job, st.integers(0, 8), gpu_model=st.sampled_from(["", "", "a100"]),
                       node_selector=st.sampled_from([{}, {}, {"zone": "x"}]))


@st.composite
def cluster(draw):
    """Nodes, the running jobs holding their taken GPUs (one per GPU, some without end),
    and a queue whose jobs have timeouts or not."""
    nodes = draw(st.one_of(busy_nodes(), busy_nodes(), busy_nodes(), snapshots()))
    minutes = st.integers(-5, 150).map(lambda m: None if m > 120 else m)  # about one in six unbounded
    run = [running(n.name, (i,), draw(minutes)) for n in nodes for i in sorted(n.taken)]
    timeouts = st.none() | st.integers(1, 120).map(lambda m: m * 60)
    entries = st.tuples(st.one_of(busy_specs, specs), st.integers(0, 2), st.integers(0, 5), timeouts)
    rows = draw(st.lists(entries,
                         min_size=2, max_size=20))
    jobs = [QueuedJob(spec=replace(spec, job_id=f"j{i}", priority=p, timeout_s=t),
                      enqueued_at=T0 + timedelta(seconds=age)) for i, (spec, p, age, t) in enumerate(rows)]
    return nodes, run, jobs


def placements(decisions):
    return [(d.job_id, d.outcome if isinstance(d.outcome, Placement) else None) for d in decisions]


def ends(spec: JobSpec) -> datetime | None:
    return None if spec.timeout_s is None else NOW + timedelta(seconds=spec.timeout_s)


def earliest_by_brute_force(nodes: list[NodeSnapshot], holders: list[Running],
                            spec: JobSpec) -> datetime | None:
    """The first moment some online, admitted node has ``spec.gpus`` fitting GPUs free."""
    moments = sorted({NOW} | {max(h.ends_at, NOW) for h in holders if h.ends_at is not None})
    for t in moments:
        for n in nodes:
            held = {g for h in holders if h.node == n.name and (h.ends_at is None or max(h.ends_at, NOW) > t)
                    for g in h.gpus}
            admitted = all(n.labels.get(k) == v for k, v in spec.node_selector.items())
            if n.state is NodeState.ONLINE and admitted and len(fitting(n, held, spec)) >= spec.gpus:
                return t
    return None


@settings(max_examples=300, deadline=None)
@given(cluster(), st.sampled_from(SUPPORTED))
def test_no_job_behind_the_reservation_starts_in_a_way_that_delays_it(world, policy):
    nodes, run, jobs = world
    decisions = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy), running=run, now=NOW)
    order = [q.spec for q in queue_order(jobs)]
    reserved = [i for i, d in enumerate(decisions) if d.reservation is not None]
    assert len(reserved) <= 1
    if not reserved:
        return
    at = reserved[0]
    r = decisions[at].reservation
    assert r is not None
    # The reserved GPUs are free by the start: every holder, before or during the pass, ends by then
    holders = list(run) + [Running(node=d.outcome.node, gpus=d.outcome.gpus, ends_at=ends(s))
                           for d, s in zip(decisions[:at], order, strict=False)
                           if isinstance(d.outcome, Placement)]
    for h in holders:
        if h.node == r.node and set(h.gpus) & set(r.gpus):
            assert h.ends_at is not None and max(h.ends_at, NOW) <= r.starts_at
    # It is the earliest such moment
    assert earliest_by_brute_force(nodes, holders, order[at]) == r.starts_at
    # Whatever starts behind it ends by then or keeps off its GPUs
    for d, spec in zip(decisions[at + 1:], order[at + 1:], strict=True):
        on_reserved = isinstance(d.outcome, Placement) and d.outcome.node == r.node
        if on_reserved and set(d.outcome.gpus) & set(r.gpus):
            assert spec.timeout_s is not None and NOW + timedelta(seconds=spec.timeout_s) <= r.starts_at


@settings(max_examples=300, deadline=None)
@given(cluster(), st.sampled_from(SUPPORTED))
def test_when_every_job_fits_reservations_change_nothing(world, policy):
    nodes, run, jobs = world
    without = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy))
    if any(isinstance(d.outcome, NoFit) for d in without):
        return
    with_ = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy), running=run, now=NOW)
    assert with_ == without


@settings(max_examples=300, deadline=None)
@given(cluster(), st.sampled_from(SUPPORTED))
def test_with_nothing_bounded_running_or_queued_the_same_jobs_start(world, policy):
    # Given no running job and no queued job with an end, no reservation can be promised
    nodes, _, jobs = world
    jobs = [replace(q, spec=replace(q.spec, timeout_s=None)) for q in jobs]
    without = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy))
    with_ = plan_pass(jobs, Fleet.from_snapshots(nodes), policy=get_policy(policy), running=[], now=NOW)
    assert placements(with_) == placements(without)


@settings(max_examples=200, deadline=None)
@given(cluster(), st.sampled_from(SUPPORTED))
def test_with_reservations_no_gpu_is_double_booked_and_none_stays_held(world, policy):
    nodes, run, jobs = world
    fleet = Fleet.from_snapshots(nodes)
    decisions = plan_pass(jobs, fleet, policy=get_policy(policy), running=run, now=NOW)
    held = {(n.name, i) for n in nodes for i in n.taken}
    for d in decisions:
        if isinstance(d.outcome, Placement):
            given_now = {(d.outcome.node, i) for i in d.outcome.gpus}
            assert not given_now & held
            held |= given_now
    for n in nodes:
        assert {(n.name, i) for i in fleet.free(n.name)} == {(n.name, g.index) for g in n.gpus} - held
