"""Placement: constraints, policies, reasons, and properties checked against a brute-force oracle."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.errors import GpuTaken, NodeNotFound, UnknownPolicy
from overlay.fleet import Fleet
from overlay.model import GpuDevice, JobSpec, NodeSnapshot, NodeState, NoFit, Placement
from overlay.placement import place
from overlay.policies import DESCRIPTIONS, POLICIES, SUPPORTED, get_policy

A100 = ("NVIDIA A100-SXM4-80GB", 81920)
A100_40 = ("NVIDIA A100-PCIE-40GB", 40960)
L4 = ("NVIDIA L4", 23034)
V100 = ("Tesla V100-SXM2-16GB", 16384)
FIRST, BEST, SPREAD = POLICIES["first-fit"], POLICIES["best-fit"], POLICIES["spread"]


def node(name: str, count: int = 4, model: tuple[str, int] = A100, *, taken=(), labels=None,
         state=NodeState.ONLINE, extra: tuple[tuple[str, int], ...] = (), slots: int | None = None,
         running: int = 0) -> NodeSnapshot:
    models = [model] * count + list(extra)
    gpus = tuple(GpuDevice(index=i, uuid=f"GPU-{name}-{i}", name=n, memory_total_mb=mb)
                 for i, (n, mb) in enumerate(models))
    return NodeSnapshot(name=name, gpus=gpus, labels=labels or {}, state=state, taken=frozenset(taken),
                        slots=slots, running=running)


def job(gpus: int = 1, **kw) -> JobSpec:
    return JobSpec(job_id=kw.pop("job_id", "j"), cmd=("true",), gpus=gpus, **kw)


def fleet(*nodes: NodeSnapshot) -> Fleet:
    return Fleet.from_snapshots(nodes)


# -- policies -------------------------------------------------------------------------------

def test_first_fit_takes_the_first_node_by_name_that_fits():
    f = fleet(node("c"), node("a", taken={0, 1, 2}), node("b"))
    assert place(job(2), f, policy=FIRST) == Placement(node="b", gpus=(0, 1))


def test_best_fit_packs_onto_the_node_with_fewest_free_fitting_gpus():
    f = fleet(node("a"), node("b", taken={0}), node("c", taken={0, 1}))
    assert place(job(2), f, policy=BEST) == Placement(node="c", gpus=(2, 3))


def test_spread_picks_the_node_with_most_free_gpus():
    f = fleet(node("a", taken={0}), node("b", 8, taken={0, 1}), node("c", taken={0, 1}))
    assert place(job(1), f, policy=SPREAD) == Placement(node="b", gpus=(2,))


def test_ties_go_to_the_first_name_for_every_policy():
    f = fleet(node("b"), node("a"))
    assert {place(job(1), f, policy=p).node for p in POLICIES.values()} == {"a"}


def test_policies_are_registered_and_described():
    assert SUPPORTED == ["first-fit", "best-fit", "spread"]
    assert set(DESCRIPTIONS) == set(SUPPORTED)
    assert get_policy("best-fit") is BEST


def test_an_unknown_policy_names_the_supported_ones():
    with pytest.raises(UnknownPolicy, match="supported: first-fit, best-fit, spread"):
        get_policy("random")


def test_a_policy_that_picks_a_node_that_cannot_take_the_job_is_an_error():
    with pytest.raises(ValueError, match="policy chose 'b'"):
        place(job(1), fleet(node("a"), node("b", taken={0, 1, 2, 3})), policy=lambda c: "b")


# -- constraints ----------------------------------------------------------------------------

def test_gpus_are_the_lowest_free_indices_and_taken_ones_are_never_given():
    assert place(job(2), fleet(node("a", taken={0, 2})), policy=FIRST) == Placement(node="a", gpus=(1, 3))


def test_draining_and_offline_nodes_take_no_jobs():
    f = fleet(node("a", state=NodeState.DRAINING), node("b", state=NodeState.OFFLINE), node("c"))
    assert place(job(1), f, policy=FIRST).node == "c"
    assert place(job(0), f, policy=FIRST).node == "c"


def test_every_gpu_must_have_the_memory_asked_for():
    f = fleet(node("a", 4, A100_40), node("b", 2, A100))
    assert place(job(2, gpu_memory_mb=80000), f, policy=FIRST) == Placement(node="b", gpus=(0, 1))


def test_gpu_model_is_a_case_insensitive_substring_of_the_gpu_name():
    f = fleet(node("a", 2, L4), node("b", 2, A100))
    assert place(job(1, gpu_model="a100"), f, policy=FIRST).node == "b"
    assert place(job(1, gpu_model="SXM4"), f, policy=FIRST).node == "b"


def test_on_a_mixed_node_only_the_fitting_gpus_count():
    f = fleet(node("a", 2, L4, extra=(A100, A100)))
    assert place(job(2, gpu_model="A100"), f, policy=FIRST) == Placement(node="a", gpus=(2, 3))
    assert isinstance(place(job(3, gpu_model="A100"), f, policy=FIRST), NoFit)


def test_node_selector_must_match_every_label():
    f = fleet(node("a", labels={"zone": "x"}), node("b", labels={"zone": "x", "tier": "prod"}))
    assert place(job(1, node_selector={"zone": "x", "tier": "prod"}), f, policy=FIRST).node == "b"


def test_a_cpu_only_job_fits_any_online_node_its_selector_admits():
    f = fleet(node("a", 0), node("b", 2, taken={0, 1}, labels={"zone": "x"}))
    assert place(job(0), f, policy=FIRST) == Placement(node="a", gpus=())
    assert place(job(0, node_selector={"zone": "x"}), f, policy=FIRST) == Placement(node="b", gpus=())


# -- reasons --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("nodes", "spec", "reason"),
    [
        ([node("a", taken={0, 1})], job(4, gpu_memory_mb=80000),
         "needs 4 GPUs with >=80000 MiB; most free on one node: 2"),
        ([node("a")], job(9), "needs 9 GPUs; the most any online node has: 4"),
        ([node("a", labels={"zone": "y"})], job(1, node_selector={"zone": "x"}),
         "no online node matches node_selector {'zone': 'x'}"),
        ([node("a", 2, L4)], job(1, gpu_model="V100"),
         "no GPU matches model 'v100'; online models: NVIDIA L4"),
        ([node("a", 2, A100_40)], job(1, gpu_model="a100", gpu_memory_mb=80000),
         "no GPU of model 'a100' has >=80000 MiB; the largest has 40960 MiB"),
        ([node("a", state=NodeState.DRAINING)], job(1), "no online nodes (1 draining)"),
        ([], job(0), "no online nodes"),
    ],
)
def test_a_no_fit_says_why_in_words_a_person_can_act_on(nodes, spec, reason):
    for policy in POLICIES.values():
        outcome = place(spec, fleet(*nodes), policy=policy)
        assert isinstance(outcome, NoFit)
        assert outcome.reason == reason


# -- job slots ------------------------------------------------------------------------------

def test_a_node_with_every_job_slot_busy_takes_no_job_until_one_ends():
    # Given node a with GPUs free but both of its agent's job slots busy
    f = fleet(node("a", 4, slots=2, running=2), node("b", 2))
    # Then even a CPU-only job goes to b, which first-fit would otherwise pass over
    assert place(job(0), f, policy=FIRST).node == "b"
    assert place(job(3), f, policy=FIRST).reason == (
        "needs 3 GPUs; the nodes with room run all the jobs their agents take (a: every job slot busy)")
    # When one of a's jobs ends, a takes work again
    f.release("a", ())
    assert place(job(3), f, policy=FIRST) == Placement(node="a", gpus=(0, 1, 2))


def test_placing_jobs_fills_a_nodes_slots_and_the_next_job_goes_elsewhere():
    f = fleet(node("a", 4, slots=2), node("b", 4, slots=2))
    nodes = []
    for _ in range(4):
        p = place(job(0), f, policy=FIRST)
        f.allocate(p.node, p.gpus)
        nodes.append(p.node)
    assert nodes == ["a", "a", "b", "b"]
    assert "every job slot busy" in place(job(0), f, policy=FIRST).reason


# -- allocate and release -------------------------------------------------------------------

def test_allocated_gpus_are_no_longer_free_or_given():
    f = fleet(node("a", 2))
    f.allocate("a", (0,))
    assert f.free("a") == {1}
    assert place(job(1), f, policy=FIRST) == Placement(node="a", gpus=(1,))
    assert isinstance(place(job(2), f, policy=FIRST), NoFit)


def test_released_gpus_can_be_placed_again():
    f = fleet(node("a", 2, taken={0, 1}))
    f.release("a", (0, 1))
    assert place(job(2), f, policy=BEST) == Placement(node="a", gpus=(0, 1))


def test_a_node_that_frees_gpus_is_ranked_by_name_among_its_new_peers():
    f = fleet(node("a", taken={0, 1}), node("b", taken={0}))
    assert place(job(3), f, policy=BEST).node == "b"  # builds the index before the change
    f.release("a", (0,))
    assert place(job(3), f, policy=BEST).node == "a"


def test_allocating_a_held_gpu_raises_and_holds_nothing():
    f = fleet(node("a", 2, taken={1}))
    with pytest.raises(GpuTaken):
        f.allocate("a", (0, 1))
    assert f.free("a") == {0}


def test_allocate_rejects_an_unknown_node_or_gpu():
    f = fleet(node("a", 2))
    with pytest.raises(NodeNotFound):
        f.allocate("b", (0,))
    with pytest.raises(ValueError, match="has no GPU"):
        f.allocate("a", (5,))


# -- properties against a brute-force oracle ------------------------------------------------

MODELS = (A100, A100_40, L4, V100)


@st.composite
def snapshots(draw) -> list[NodeSnapshot]:
    """Up to 6 nodes of up to 5 GPUs each, of mixed models, labels, states, holds and job slots."""
    names = draw(st.lists(st.sampled_from("abcdefgh"), max_size=6, unique=True))
    nodes = []
    for name in names:
        models = draw(st.lists(st.sampled_from(MODELS), max_size=5))
        labels = draw(st.dictionaries(st.sampled_from(["zone", "tier"]), st.sampled_from(["x", "y"])))
        slots = draw(st.none() | st.integers(0, 3))
        nodes.append(node(name, 0, extra=tuple(models), labels=labels,
                          state=draw(st.sampled_from(NodeState)),
                          taken=draw(st.sets(st.integers(0, len(models) - 1))) if models else (),
                          slots=slots, running=draw(st.integers(0, 4)) if slots is not None else 0))
    return nodes


specs = st.builds(
    job,
    st.integers(0, 5),
    gpu_memory_mb=st.sampled_from([0, 20000, 40000, 80000]),
    gpu_model=st.sampled_from(["", "a100", "A100", "l4", "v100", "h100", "nvidia"]),
    node_selector=st.dictionaries(st.sampled_from(["zone", "tier"]), st.sampled_from(["x", "y"])),
)


def fitting(snap: NodeSnapshot, taken: set[int], spec: JobSpec) -> list[int]:
    """Free GPUs of ``snap`` that meet ``spec``, plainly (for CPU-only jobs: every free GPU)."""
    def fits(g: GpuDevice) -> bool:
        return spec.gpus == 0 or (spec.gpu_model.lower() in g.name.lower()
                                  and g.memory_total_mb >= spec.gpu_memory_mb)
    return sorted(g.index for g in snap.gpus if g.index not in taken and fits(g))


def oracle(nodes: list[NodeSnapshot], held: Mapping[str, set[int]], spec: JobSpec,
           policy: str, running: Mapping[str, int] | None = None) -> Placement | None:
    """What ``policy`` must choose, by scanning every node (``running``: jobs on each now)."""
    options = []
    for snap in nodes:
        free = fitting(snap, held[snap.name], spec)
        selected = all(snap.labels.get(k) == v for k, v in spec.node_selector.items())
        jobs = (running or {}).get(snap.name, snap.running)
        has_slot = snap.slots is None or jobs < snap.slots
        if snap.state is NodeState.ONLINE and selected and has_slot and len(free) >= spec.gpus:
            options.append((snap.name, free))
    rank = {"first-fit": lambda o: o[0], "best-fit": lambda o: (len(o[1]), o[0]),
            "spread": lambda o: (-len(o[1]), o[0])}[policy]
    if not options:
        return None
    name, free = min(options, key=rank)
    return Placement(node=name, gpus=tuple(free[: spec.gpus]))


@settings(max_examples=300, deadline=None)
@given(snapshots(), specs, st.sampled_from(SUPPORTED))
def test_a_placement_never_breaks_a_constraint_or_gives_a_held_gpu(nodes, spec, policy):
    outcome = place(spec, Fleet.from_snapshots(nodes), policy=get_policy(policy))
    if isinstance(outcome, NoFit):
        assert outcome.reason
        return
    snap = {n.name: n for n in nodes}[outcome.node]
    gpus = {g.index: g for g in snap.gpus}
    assert snap.state is NodeState.ONLINE
    assert snap.slots is None or snap.running < snap.slots
    assert all(snap.labels.get(k) == v for k, v in spec.node_selector.items())
    assert len(outcome.gpus) == len(set(outcome.gpus)) == spec.gpus
    for i in outcome.gpus:
        assert i in gpus and i not in snap.taken
        assert gpus[i].memory_total_mb >= spec.gpu_memory_mb
        assert spec.gpu_model.lower() in gpus[i].name.lower()


@settings(max_examples=300, deadline=None)
@given(snapshots(), specs, st.sampled_from(SUPPORTED))
def test_each_policy_chooses_what_the_oracle_chooses_and_fits_whenever_a_fit_exists(nodes, spec, policy):
    held = {n.name: set(n.taken) for n in nodes}
    expected = oracle(nodes, held, spec, policy)
    outcome = place(spec, Fleet.from_snapshots(nodes), policy=get_policy(policy))
    assert outcome == expected if expected else isinstance(outcome, NoFit)


@settings(max_examples=200, deadline=None)
@given(snapshots(), st.lists(st.tuples(specs, st.booleans()), max_size=20), st.sampled_from(SUPPORTED))
def test_allocations_and_releases_keep_the_index_in_step_with_the_oracle(nodes, steps, policy):
    f = Fleet.from_snapshots(nodes)
    held = {n.name: set(n.taken) for n in nodes}
    running = {n.name: n.running for n in nodes}
    placed: list[Placement] = []
    for spec, release_first in steps:
        if release_first and placed:
            gone = placed.pop(0)
            f.release(gone.node, gone.gpus)
            held[gone.node] -= set(gone.gpus)
            running[gone.node] -= 1
        outcome = place(spec, f, policy=get_policy(policy))
        expected = oracle(nodes, held, spec, policy, running)
        assert (outcome if isinstance(outcome, Placement) else None) == expected
        if isinstance(outcome, Placement):
            f.allocate(outcome.node, outcome.gpus)
            held[outcome.node] |= set(outcome.gpus)
            running[outcome.node] += 1
            assert not f.free(outcome.node) & set(outcome.gpus)
            placed.append(outcome)
