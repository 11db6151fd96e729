"""Gang jobs in the pure core: all-or-nothing placement on distinct nodes, the rendezvous
port, and the environment each part gets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.gang import Rendezvous, pick_port, place_gang, rendezvous_env
from overlay.launch import job_env
from overlay.model import GangPlacement, NodeState, NoFit, Placement
from overlay.policies import POLICIES
from overlay.queueing import QueuedJob, plan_pass
from overlay.quota import Quota, QuotaGate
from tests.unit.test_placement import A100, L4, fleet, job, node

FIRST, SPREAD = POLICIES["first-fit"], POLICIES["spread"]


def test_a_gang_gets_one_part_per_distinct_node_in_rank_order():
    # Given three nodes with room, the first holding room for two parts' GPUs
    f = fleet(node("a", 4), node("b", 2), node("c", 2))
    # When a 2-node job of 2 GPUs a node is placed first-fit
    got = place_gang(job(2, nodes=2), f, policy=FIRST)
    # Then rank 0 is on a and rank 1 on b: never two parts on one node
    assert got == GangPlacement(node="a", gpus=(0, 1), parts=(Placement(node="a", gpus=(0, 1)),
                                                               Placement(node="b", gpus=(0, 1))))


def test_a_gang_that_fits_on_fewer_nodes_than_it_has_parts_is_not_placed_at_all():
    # Given one node with 8 free GPUs and one with only 1
    f = fleet(node("a", 8), node("b", 2, taken={0}))
    # When a 2-node job of 2 GPUs a node is placed
    got = place_gang(job(2, nodes=2), f, policy=FIRST)
    # Then nothing: the reason counts the nodes that could take a part, and no GPU is held
    assert isinstance(got, NoFit)
    assert got.reason == "a gang of 2 nodes (2 GPUs each): 1 online node can take a part now"
    assert f.free("a") == frozenset(range(8))


def test_every_part_meets_the_constraints_of_one_node():
    # Given two A100 nodes, an L4 node and a draining A100 node
    f = fleet(node("a", 2), node("b", 2, L4), node("c", 2, labels={"zone": "x"}),
              node("d", 2, state=NodeState.DRAINING))
    # When a gang asks for A100s on 2 nodes: only a and c qualify
    got = place_gang(job(1, nodes=2, gpu_model="a100"), f, policy=FIRST)
    assert isinstance(got, GangPlacement) and [p.node for p in got.parts] == ["a", "c"]
    # And a selector that admits one node only leaves the gang unplaced
    assert isinstance(place_gang(job(1, nodes=2, node_selector={"zone": "x"}), f, policy=FIRST), NoFit)


def test_a_gang_that_no_node_could_take_says_why_one_node_could_not():
    got = place_gang(job(1, nodes=2, gpu_model="h100"), fleet(node("a"), node("b")), policy=FIRST)
    assert isinstance(got, NoFit) and "no GPU matches model 'h100'" in got.reason


def test_a_cpu_only_gang_takes_nodes_but_no_gpus():
    f = fleet(node("a", 0), node("b", 0), node("c", 0))
    got = place_gang(job(0, nodes=3), f, policy=SPREAD)
    assert isinstance(got, GangPlacement)
    assert sorted(p.node for p in got.parts) == ["a", "b", "c"] and all(p.gpus == () for p in got.parts)


def test_the_pass_allocates_every_part_and_later_jobs_see_them_held():
    # Given two 2-GPU nodes
    f = fleet(node("a", 2), node("b", 2))
    # When a gang of 2 nodes × 2 GPUs and then a 1-GPU job are planned
    decisions = plan_pass([QueuedJob(spec=job(2, nodes=2, job_id="g")), QueuedJob(spec=job(1, job_id="one"))],
                          f, policy=FIRST)
    # Then the gang holds both nodes whole and the small job waits
    assert isinstance(decisions[0].outcome, GangPlacement)
    assert f.free("a") == f.free("b") == frozenset()
    assert isinstance(decisions[1].outcome, NoFit)


def test_a_gang_that_does_not_fit_holds_nothing_and_lets_smaller_jobs_by():
    f = fleet(node("a", 2), node("b", 2, taken={0, 1}))
    decisions = plan_pass([QueuedJob(spec=job(2, nodes=2, job_id="g")), QueuedJob(spec=job(2, job_id="one"))],
                          f, policy=FIRST)
    assert isinstance(decisions[0].outcome, NoFit)
    assert decisions[1].outcome == Placement(node="a", gpus=(0, 1))


def test_quota_counts_every_part_of_a_gang():
    # Given an account guaranteed 3 GPUs, and two other accounts owed the rest of the fleet
    snaps = [node("a", 2), node("b", 2)]
    gate = QuotaGate({"lab": Quota(gpus=3), "x": Quota(gpus=1)}, snaps)
    # When it asks for 2 nodes × 2 GPUs (4 > 3 and the idle GPU left is owed to x)
    spec = job(2, nodes=2, account="lab")
    decisions = plan_pass([QueuedJob(spec=spec)], fleet(*snaps), policy=FIRST, admit=gate)
    # Then it waits at its quota, counting all 4
    assert isinstance(decisions[0].outcome, NoFit)
    assert "the job needs 4" in decisions[0].outcome.reason


@settings(max_examples=60, deadline=None)
@given(free=st.lists(st.integers(0, 4), min_size=1, max_size=6), nodes=st.integers(2, 5),
       gpus=st.integers(0, 3))
def test_a_gang_is_placed_exactly_when_enough_distinct_nodes_fit(free, nodes, gpus):
    snaps = [node(f"n{i}", 4, taken=set(range(4 - k))) for i, k in enumerate(free)]
    got = place_gang(job(gpus, nodes=nodes), fleet(*snaps), policy=FIRST)
    fitting = sum(1 for k in free if k >= gpus)
    if fitting < nodes:
        assert isinstance(got, NoFit)
        return
    assert isinstance(got, GangPlacement) and len(got.parts) == nodes
    assert len({p.node for p in got.parts}) == nodes
    for p in got.parts:
        taken = set(range(4 - free[int(p.node[1:])]))
        assert len(p.gpus) == gpus and not taken & set(p.gpus)


def test_the_port_is_stable_for_an_attempt_and_skips_ports_taken():
    first = pick_port("g", 1, taken=())
    assert 29500 <= first <= 29999 and pick_port("g", 1, taken=()) == first
    assert pick_port("g", 1, taken={first}) == (first + 1 if first < 29999 else 29500)
    assert pick_port("g", 1, taken={7000}, low=7000, high=7001) == 7001
    assert pick_port("g", 1, taken={7000}, low=7000, high=7000) == 7000  # all taken: the first choice
    with pytest.raises(ValueError):
        pick_port("g", 1, taken=(), low=10, high=9)


def test_each_part_gets_the_rendezvous_and_its_rank():
    spec = job(4, nodes=2, env={"MASTER_PORT": "1"})
    env = job_env(spec, (0, 1, 2, 3), agent_env={}, rendezvous=Rendezvous(master_addr="10.0.0.1",
                                                                            master_port=29511, rank=1))
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NNODES", "NODE_RANK",
                                "GPUS_PER_NODE", "OVERLAY_PART")} == {
        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29511", "WORLD_SIZE": "2", "NNODES": "2",
        "NODE_RANK": "1", "GPUS_PER_NODE": "4", "OVERLAY_PART": "1"}
    assert rendezvous_env(spec, Rendezvous(master_addr="h", master_port=1, rank=0))["NODE_RANK"] == "0"
    # And a one-node job gets none of them
    assert "NODE_RANK" not in job_env(job(1), (0,), agent_env={})


def test_an_a100_gang_is_refused_on_a_mixed_pair():
    f = fleet(node("a", 1, A100), node("b", 1, L4))
    assert isinstance(place_gang(job(1, nodes=2, gpu_model="a100"), f, policy=FIRST), NoFit)
