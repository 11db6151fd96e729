"""The simulator with gang jobs (a workload's ``nodes``): a gang holds its GPUs on that many
nodes at once, placed all or nothing exactly as the scheduler's pass places it."""

from __future__ import annotations

import heapq
import random
from dataclasses import replace

import pytest

from cli.workload_files import read_workload
from overlay.errors import WorkloadError
from overlay.fleet import Fleet
from overlay.gang import parts_of
from overlay.model import Placement
from overlay.policies import POLICIES
from overlay.queueing import QueuedJob, plan_pass
from overlay.quota import Quota
from overlay.simulation import Sharing, SimEvent, simulate
from overlay.workload import SimJob, synthetic_fleet, synthetic_jobs
from tests.unit.test_placement import node
from tests.unit.test_simulation import sim_job

FIRST = POLICIES["first-fit"]


def with_gangs(jobs: list[SimJob], *, seed: int) -> list[SimJob]:
    """Every fifth job of ``jobs`` made a gang of 2 or 3 nodes."""
    rng = random.Random(seed)
    return [replace(j, spec=replace(j.spec, nodes=rng.choice((2, 3)))) if i % 5 == 0 else j
            for i, j in enumerate(jobs)]


def gang_world(seed: int = 3):
    fleet = synthetic_fleet(12, 4, seed=seed)
    jobs = list(synthetic_jobs(500, total_gpus=48, gpus_per_node=4, load=1.1, seed=seed))
    return fleet, with_gangs(jobs, seed=seed)


def test_a_gang_holds_both_nodes_and_the_job_behind_it_waits_for_its_end():
    # Given two 2-GPU nodes, a gang of 2 × 2 GPUs for 10 s, then a 1-GPU job
    jobs = [sim_job("g", 0, 2, 10, nodes=2), sim_job("small", 1, 1, 5)]
    events: list[SimEvent] = []
    result = simulate([node("a", 2), node("b", 2)], jobs, policy=FIRST, observer=events.append)
    starts = {e.job.spec.job_id: e for e in events if e.kind == "start"}
    # Then the gang starts at once on both nodes, and the small job only when it has ended
    assert [(p.node, p.gpus) for p in starts["g"].parts] == [("a", (0, 1)), ("b", (0, 1))]
    assert starts["small"].at_s == 10
    # and every GPU of the fleet was held over the window
    assert result.utilization == 1.0 and result.placed == 2


def test_a_gang_wider_than_the_fleet_is_never_placed_and_holds_no_one_back():
    jobs = [sim_job("wide", 0, 1, 5, nodes=3), sim_job("ok", 1, 1, 5)]
    result = simulate([node("a", 2), node("b", 2)], jobs, policy=FIRST)
    assert (result.placed, result.never_placed) == (1, 1)


@pytest.mark.parametrize("name", POLICIES)
def test_the_simulator_places_gangs_exactly_as_plan_pass_would(name):
    nodes, jobs = gang_world()
    events: list[SimEvent] = []
    simulate(nodes, jobs, policy=POLICIES[name], observer=events.append)
    ours = {e.job.spec.job_id: (e.at_s, e.parts) for e in events if e.kind == "start"}
    assert ours == reference(nodes, jobs, POLICIES[name])
    assert sum(1 for _, parts in ours.values() if len(parts) > 1) > 50


def reference(nodes, jobs, policy):
    """plan_pass over every waiting job at every event, releasing every part at a job's end."""
    fleet = Fleet.from_snapshots(nodes)
    pending, waiting, running, starts = list(jobs), [], [], {}
    by_id = {j.spec.job_id: j for j in jobs}
    while pending or running:
        now = min(x for x in (pending[0].submit_s if pending else None,
                              running[0][0] if running else None) if x is not None)
        while running and running[0][0] <= now:
            _, _, parts = heapq.heappop(running)
            for p in parts:
                fleet.release(p.node, p.gpus)
        while pending and pending[0].submit_s <= now:
            job = pending.pop(0)
            waiting.append(QueuedJob(spec=job.spec, enqueued_at=job.enqueued_at))
        for decision in plan_pass(waiting, fleet, policy=policy):
            if isinstance(decision.outcome, Placement):
                parts = parts_of(decision.outcome)
                starts[decision.job_id] = (now, parts)
                heapq.heappush(running, (now + by_id[decision.job_id].duration_s, decision.job_id, parts))
        waiting = [w for w in waiting if w.spec.job_id not in starts]
    return starts


@pytest.mark.parametrize("mode", ["sharing", "backfill"])
def test_gangs_run_under_fair_share_and_backfill_without_holding_a_gpu_twice(mode):
    nodes, jobs = gang_world(seed=4)
    jobs = [replace(j, spec=replace(j.spec, account="a" if i % 2 else "b")) for i, j in enumerate(jobs)]
    held: dict[tuple[str, int], str] = {}

    def watch(e: SimEvent) -> None:
        keys = [(p.node, g) for p in e.parts for g in p.gpus]
        assert len(e.parts) == e.job.spec.nodes and len({p.node for p in e.parts}) == e.job.spec.nodes
        if e.kind == "start":
            assert not any(k in held for k in keys)
            held.update((k, e.job.spec.job_id) for k in keys)
        else:
            assert all(held.pop(k) == e.job.spec.job_id for k in keys)

    sharing = Sharing(shares={"a": 1, "b": 1}, quotas={"a": Quota(gpus=30)}) if mode == "sharing" else None
    result = simulate(nodes, jobs, policy=FIRST, observer=watch, sharing=sharing, backfill=mode == "backfill")
    assert result.placed + result.never_placed == len(jobs) and not held
    if sharing is not None:  # GPU-hours count every part
        expected = sum(j.spec.gpus * j.spec.nodes * j.duration_s for j in jobs) / 3600
        assert sum(a.gpu_hours for a in result.accounts) == pytest.approx(expected)


def write(tmp_path, text: str):
    path = tmp_path / "w.csv"
    path.write_text(text)
    return path


def test_a_workload_csv_takes_nodes(tmp_path):
    first, second = read_workload(write(tmp_path, "submit,gpus,duration_s,nodes\n0,8,60,4\n1,1,5,\n"))
    assert (first.spec.nodes, second.spec.nodes) == (4, 1)


@pytest.mark.parametrize(("body", "expected"), [
    ("0,1,5,0\n", "line 2: nodes must be a whole number from 1 to 64, got '0'"),
    ("0,1,5,65\n", "line 2: nodes must be a whole number from 1 to 64"),
    ("0,1,5,two\n", "line 2: nodes must be a whole number from 1 to 64"),
])
def test_a_bad_nodes_cell_is_refused_naming_its_line(tmp_path, body, expected):
    with pytest.raises(WorkloadError) as e:
        read_workload(write(tmp_path, "submit,gpus,duration_s,nodes\n" + body))
    assert expected in e.value.message


def test_a_gang_array_row_is_refused(tmp_path):
    with pytest.raises(WorkloadError) as e:
        read_workload(write(tmp_path, "submit,gpus,duration_s,nodes,array,job_id\n0,1,5,2,0-3,sweep\n"))
    assert "nodes must be 1 in an array row" in e.value.message
