"""The simulator with backfill reservations: the same decisions as plan_pass over the whole
queue at every moment, big jobs no longer starved, and nothing changed where nothing waits."""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import replace
from datetime import timedelta

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.simulate import simulate as simulate_command
from cli.workload_files import read_workload
from overlay.errors import WorkloadError
from overlay.fleet import Fleet
from overlay.model import NodeSnapshot, NoFit, Placement
from overlay.policies import POLICIES, SUPPORTED, get_policy
from overlay.queueing import QueuedJob, plan_pass
from overlay.reservation import Running
from overlay.simulation import Sharing, SimEvent, simulate
from overlay.workload import EPOCH, SimJob, synthetic_fleet, synthetic_jobs
from tests.unit.test_placement import node
from tests.unit.test_simulation import sim_job

FIRST = POLICIES["first-fit"]


def starts(nodes, jobs, *, policy=FIRST, backfill=True) -> dict[str, tuple[float, str, tuple[int, ...]]]:
    events: list[SimEvent] = []
    simulate(nodes, jobs, policy=policy, observer=events.append, backfill=backfill)
    return {e.job.spec.job_id: (e.at_s, e.node, e.gpus) for e in events if e.kind == "start"}


def whole_queue_replay(nodes: list[NodeSnapshot], jobs: list[SimJob], policy) -> dict[str, tuple]:
    """The reference: at every moment, plan_pass over every waiting job, with every running
    job's end (its timeout, else its run time rounded up), the obvious way."""
    def timeout(job: SimJob) -> int:
        return job.spec.timeout_s if job.spec.timeout_s is not None else max(1, math.ceil(job.duration_s))

    fleet, idle = Fleet.from_snapshots(nodes), Fleet.from_snapshots(nodes)
    pending, waiting = list(jobs), {}
    running: list[tuple[float, str, Running]] = []
    started: dict[str, tuple] = {}
    while pending or running:
        now = min([pending[0].submit_s] if pending else [], default=math.inf)
        now = min(now, running[0][0] if running else math.inf)
        while running and running[0][0] <= now:
            r = heapq.heappop(running)[2]
            fleet.release(r.node, r.gpus)
        while pending and pending[0].submit_s <= now:
            job = pending.pop(0)
            found = idle.candidates(job.spec)
            if not isinstance(found, NoFit) and found.buckets:  # else no node could ever take it
                waiting[job.spec.job_id] = job
        queue = [QueuedJob(spec=replace(j.spec, timeout_s=timeout(j)), enqueued_at=j.enqueued_at)
                 for j in waiting.values()]
        at = EPOCH + timedelta(seconds=now)
        for d in plan_pass(queue, fleet, policy=policy, running=[r for *_, r in running], now=at):
            if isinstance(d.outcome, Placement):
                job = waiting.pop(d.job_id)
                started[d.job_id] = (now, d.outcome.node, d.outcome.gpus)
                held = Running(node=d.outcome.node, gpus=d.outcome.gpus,
                               ends_at=at + timedelta(seconds=timeout(job)))
                heapq.heappush(running, (now + job.duration_s, d.job_id, held))
    return started


def test_a_big_job_behind_a_stream_of_one_gpu_jobs_starts_when_the_running_ones_end():
    # Given one node of 4 GPUs busy with 1-GPU jobs ending at 10, 20, 30 and 40 s, a 4-GPU job
    # submitted at 1 s, a 5-s job at 2 s, and a 100-s 1-GPU job every 5 s from 5 s to 60 s
    jobs = [sim_job(f"first-{i}", 0, 1, 10 * (i + 1)) for i in range(4)]
    jobs += [sim_job("big", 1, 4, 10), sim_job("quick", 2, 1, 5)]
    jobs += [sim_job(f"stream-{t:02d}", t, 1, 100) for t in range(5, 61, 5)]
    # When it is replayed with reservations and without
    on, off = starts([node("n", 4)], jobs), starts([node("n", 4)], jobs, backfill=False)
    # Then with them the big job starts at 40 s, when the last first job ends, and the quick
    # job backfills at 10 s; without them the stream takes every GPU that frees, for as long
    # as it lasts
    assert on["big"][0] == 40 and on["quick"][0] == 10
    assert all(on[f"stream-{t:02d}"][0] >= 50 for t in range(5, 61, 5))
    assert off["big"][0] > 100


def test_with_reservations_a_workload_where_nothing_waits_starts_every_job_the_same():
    jobs = [sim_job(f"j{i}", i * 10, 1 + i % 4, 5) for i in range(20)]
    assert starts([node("n", 4)], jobs) == starts([node("n", 4)], jobs, backfill=False)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(SUPPORTED), st.sampled_from([0.9, 1.2, 2.0]))
def test_the_simulator_decides_as_plan_pass_over_the_whole_queue_would(seed, policy, load):
    # Given a small fleet and a stream with a queue, some jobs with timeouts longer than their run
    nodes = synthetic_fleet(6, 4, seed=seed)
    jobs = list(synthetic_jobs(150, total_gpus=24, gpus_per_node=4, load=load, seed=seed))
    jobs = [j if i % 3 else replace(j, spec=replace(j.spec, timeout_s=math.ceil(j.duration_s) + 60 * (i % 7)))
            for i, j in enumerate(jobs)]
    # Then the simulator's reduced passes start every job when and where the reference does
    chosen = get_policy(policy)
    assert starts(nodes, jobs, policy=chosen) == whole_queue_replay(nodes, jobs, chosen)


def test_backfill_is_not_simulated_with_fair_share():
    with pytest.raises(ValueError, match="fair share"):
        simulate([node("n", 4)], [], policy=FIRST, backfill=True, sharing=Sharing())


def test_cpu_only_and_never_placeable_jobs_do_not_take_the_reservation():
    jobs = [sim_job("first", 0, 2, 30), sim_job("huge", 1, 8, 10), sim_job("cpu", 2, 0, 5),
            sim_job("pair", 3, 4, 10), sim_job("long", 4, 2, 100)]
    s = starts([node("n", 4)], jobs)
    # pair is reserved from 30 s; long (100 s) may not take the two free GPUs it needs
    assert s["cpu"][0] == 2 and s["pair"][0] == 30 and s["long"][0] == 40
    assert "huge" not in s


def test_overlay_simulate_backfill_switches_reservations_on_and_records_it(tmp_path):
    args = ["--nodes", "6", "--gpus-per-node", "4", "--jobs", "300", "--load", "1.5", "--policy", "spread",
            "--processes", "1"]
    on = CliRunner().invoke(simulate_command, [*args, "--backfill", "--out", str(tmp_path / "on")])
    off = CliRunner().invoke(simulate_command, [*args, "--out", str(tmp_path / "off")])
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("on", "off")}
    assert results["on"]["config"]["backfill"] is True and results["off"]["config"]["backfill"] is False
    # The same workload, decided differently
    assert results["on"]["policies"][0]["wait_p99_s"] != results["off"]["policies"][0]["wait_p99_s"]


def test_overlay_simulate_refuses_backfill_with_shares(tmp_path):
    shares = tmp_path / "shares.csv"
    shares.write_text("account,share\nml,1\n")
    refused = CliRunner().invoke(simulate_command, ["--nodes", "2", "--backfill", "--shares", str(shares)])
    assert refused.exit_code == 2 and "--backfill is not simulated with --shares" in refused.output


def test_a_workload_csv_may_give_timeouts_which_bound_each_run_and_its_estimate(tmp_path):
    # Given a 4-GPU node, two 2-GPU jobs (one killed at its 20-s timeout), a 4-GPU job, then
    # a 2-GPU job of 600 s and one killed at 5 s
    path = tmp_path / "w.csv"
    path.write_text("submit,gpus,duration_s,timeout_s\n0,2,30,\n0,2,50,20\n1,4,10,600\n"
                    "2,2,100,600\n2,2,50,5\n")
    jobs = read_workload(path)
    assert [(j.spec.timeout_s, j.duration_s) for j in jobs] == [(None, 30), (20, 20), (600, 10), (600, 100),
                                                                (5, 5)]
    # Then the 4-GPU job is reserved from 30 s, when the job without timeout ends (its run
    # time is its estimate); the 5-s job backfills at 20 s and the 600-s job waits
    on = starts([node("n", 4)], jobs)
    assert (on["line-4"][0], on["line-6"][0], on["line-5"][0]) == (30, 20, 40)
    # and without reservations the 600-s job takes the GPUs freed at 20 s, ahead of it
    assert starts([node("n", 4)], jobs, backfill=False)["line-5"][0] == 20
    bad = tmp_path / "bad.csv"
    bad.write_text("submit,gpus,duration_s,timeout_s\n0,1,5,0\n")
    with pytest.raises(WorkloadError, match="line 2: timeout_s must be a whole number of seconds >= 1"):
        read_workload(bad)
