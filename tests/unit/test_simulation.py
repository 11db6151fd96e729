"""The simulator: the scheduler's own pass over simulated time, its figures, and workload files."""

from __future__ import annotations

import heapq
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.simulate import simulate as simulate_command
from cli.workload_files import read_workload
from overlay import gang, placement, simulation
from overlay.errors import OverlayError, WorkloadError
from overlay.fleet import Candidates, Fleet
from overlay.model import JobSpec, NodeSnapshot, Placement
from overlay.policies import POLICIES
from overlay.queueing import QueuedJob, plan_pass
from overlay.simulation import SimEvent, percentile, simulate
from overlay.workload import EPOCH, SIZES, SimJob, synthetic_fleet, synthetic_jobs
from tests.unit.test_placement import node

FIRST = POLICIES["first-fit"]


def sim_job(job_id: str, submit_s: float, gpus: int, duration_s: float, **kw) -> SimJob:
    spec = JobSpec(job_id=job_id, cmd=("true",), gpus=gpus, **kw)
    return SimJob(spec=spec, submit_s=submit_s, duration_s=duration_s)


def small_world(seed: int = 3, jobs: int = 600, load: float = 1.2):
    """12 nodes of 4 mixed GPUs and enough jobs to make a queue."""
    fleet = synthetic_fleet(12, 4, seed=seed)
    return fleet, list(synthetic_jobs(jobs, total_gpus=48, gpus_per_node=4, load=load, seed=seed))


def recorded(nodes, jobs, policy=FIRST, **kw):
    events: list[SimEvent] = []
    result = simulate(nodes, jobs, policy=policy, observer=events.append, **kw)
    return result, events


# -- what the simulator decides ----------------------------------------------------------------

def test_a_hand_computed_workload_gets_the_waits_worked_out_by_hand():
    # Given one node with 2 GPUs, a 2-GPU job holding both for 10 s, then three more
    jobs = [sim_job("a", 0, 2, 10), sim_job("b", 1, 1, 5), sim_job("c", 2, 1, 3),
            sim_job("d", 3, 2, 1), sim_job("e", 4, 1, 2, priority=5)]
    result, events = recorded([node("n", 2)], jobs)
    starts = {e.job.spec.job_id: e.at_s for e in events if e.kind == "start"}
    # Then at 10 the high-priority e and the oldest of the rest, b, take the two GPUs;
    # c follows e at 12, d needs both and gets them when b ends at 15
    assert starts == {"a": 0, "e": 10, "b": 10, "c": 12, "d": 15}
    waits = sorted([0, 6, 9, 10, 12])
    assert (result.wait_p50_s, result.wait_p95_s, result.wait_max_s) == (9, 12, 12)
    assert sorted(e.at_s - e.job.submit_s for e in events if e.kind == "start") == waits
    # Over the window (0 to 4 s, the first submit to the last) both GPUs were held
    assert result.window_s == 4 and result.utilization == 1.0
    assert result.makespan_s == 16 and result.placed == 5 and result.never_placed == 0
    # jobs waiting: 1 from 1 s, 2 from 2 s, 3 from 3 s -> (1 + 2 + 3) / 4 on average
    assert result.mean_queue == 1.5 and result.max_queue == 4
    assert result.fragmentation == 0.0  # no GPU was free while jobs waited


def test_free_gpus_while_jobs_wait_count_as_fragmentation_and_long_waits_as_starved():
    # Given two 2-GPU nodes that spread half fills with two long 1-GPU jobs, then a 2-GPU job
    jobs = [sim_job("x", 0, 1, 100), sim_job("y", 0, 1, 100), sim_job("big", 1, 2, 1),
            sim_job("late", 10, 1, 1)]
    nodes = [node("n1", 2), node("n2", 2)]
    result = simulate(nodes, jobs, policy=POLICIES["spread"], starve_after_s=50)
    # Then from 1 s to 10 s two GPUs are free and big, waiting, cannot use them: 2 × 9 of 4 × 10
    assert result.fragmentation == pytest.approx(18 / 40)
    # And big waits for x and y to end, past the bound
    assert result.starved == 1 and result.wait_max_s == 99


def test_a_job_no_node_can_take_is_reported_never_placed():
    jobs = [sim_job("ok", 0, 1, 5), sim_job("huge", 1, 16, 5), sim_job("h100", 2, 1, 5, gpu_model="h100")]
    result = simulate([node("n", 4)], jobs, policy=FIRST)
    assert (result.placed, result.never_placed) == (1, 2)


@pytest.mark.parametrize("name", POLICIES)
def test_the_simulator_places_exactly_as_plan_pass_over_the_whole_queue_would(name):
    # Given a fleet and a workload that builds a queue
    nodes, jobs = small_world()
    # When the simulator runs, and a plain loop running plan_pass on every event runs too
    _, events = recorded(nodes, jobs, policy=POLICIES[name])
    ours = {e.job.spec.job_id: (e.at_s, e.node, e.gpus) for e in events if e.kind == "start"}
    # Then every job starts at the same time on the same node and GPUs
    assert ours == reference_starts(nodes, jobs, POLICIES[name])
    assert len(ours) > 500


def reference_starts(nodes, jobs, policy) -> dict[str, tuple[float, str, tuple[int, ...]]]:
    """The obvious, slow simulator: the scheduler's plan_pass over every waiting job, every event."""
    fleet = Fleet.from_snapshots(nodes)
    pending, waiting, running, starts = list(jobs), [], [], {}
    by_id = {j.spec.job_id: j for j in jobs}
    while pending or running:
        now = min(x for x in (pending[0].submit_s if pending else None,
                              running[0][0] if running else None) if x is not None)
        while running and running[0][0] <= now:
            _, _, where, gpus = heapq.heappop(running)
            fleet.release(where, gpus)
        while pending and pending[0].submit_s <= now:
            job = pending.pop(0)
            waiting.append(QueuedJob(spec=job.spec, enqueued_at=job.enqueued_at))
        for decision in plan_pass(waiting, fleet, policy=policy):
            if isinstance(decision.outcome, Placement):
                d = decision.outcome
                starts[decision.job_id] = (now, d.node, d.gpus)
                heapq.heappush(running, (now + by_id[decision.job_id].duration_s, decision.job_id,
                                         d.node, d.gpus))
        waiting = [w for w in waiting if w.spec.job_id not in starts]
    return starts


def test_every_job_is_placed_once_and_ends_and_no_gpu_is_ever_held_twice():
    nodes, jobs = small_world(seed=5)
    result, events = recorded(nodes, jobs, policy=POLICIES["best-fit"])
    held: dict[tuple[str, int], str] = {}
    starts, ends = Counter(), Counter()
    busy = 0
    for e in events:  # replayed in the order they happened
        keys = [(e.node, g) for g in e.gpus]
        if e.kind == "start":
            assert not any(k in held for k in keys), f"{e.job.spec.job_id} got a held GPU"
            assert len(e.gpus) == e.job.spec.gpus and e.at_s >= e.job.submit_s
            held.update((k, e.job.spec.job_id) for k in keys)
            starts[e.job.spec.job_id] += 1
            busy += len(e.gpus)
        else:
            assert all(held.pop(k) == e.job.spec.job_id for k in keys)
            ends[e.job.spec.job_id] += 1
            busy -= len(e.gpus)
        assert busy <= result.total_gpus
    assert set(starts.values()) == {1} and starts == ends and len(starts) == len(jobs)
    assert not held


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    first = simulate(*small_world(seed=7), policy=FIRST, sample_every_s=60)
    again = simulate(*small_world(seed=7), policy=FIRST, sample_every_s=60)
    other = simulate(*small_world(seed=8), policy=FIRST, sample_every_s=60)
    assert first == again
    assert other != first


@pytest.mark.parametrize("load", [0.3, 1.0, 3.0])
def test_utilization_and_fragmentation_are_shares_between_0_and_1(load):
    result = simulate(*small_world(load=load), policy=POLICIES["spread"], sample_every_s=30)
    assert 0 < result.utilization <= 1 and 0 <= result.fragmentation <= 1
    assert all(0 <= s.busy_gpus <= result.total_gpus for s in result.samples)
    assert result.samples and all(s.at_s <= result.window_s for s in result.samples)


def test_the_simulator_asks_the_real_place_with_the_policy_it_is_given(monkeypatch):
    asked: list[Candidates] = []

    def counting(candidates: Candidates) -> str | None:
        asked.append(candidates)
        return FIRST(candidates)

    places = Counter()
    real_place = placement.place

    def spying_place(job, fleet, *, policy):
        places["calls"] += 1
        return real_place(job, fleet, policy=policy)

    # the scheduler's own (one node, or a gang's parts through overlay.gang), not a copy
    assert simulation.place_any is gang.place_any and gang.place is placement.place
    monkeypatch.setattr(gang, "place", spying_place)
    result = simulate(*small_world(), policy=counting)
    assert places["calls"] == result.decisions == len(asked) >= result.placed


def test_jobs_out_of_submit_order_are_refused():
    jobs = [sim_job("a", 5, 1, 1), sim_job("b", 2, 1, 1)]
    with pytest.raises(ValueError, match="'b' is submitted before 'a'"):
        simulate([node("n")], jobs, policy=FIRST)


def test_percentiles_are_nearest_rank():
    assert [percentile([1, 2, 3, 4], p) for p in (1, 50, 75, 99, 100)] == [1, 2, 3, 4, 4]
    assert percentile([], 50) == 0.0


# -- the synthetic workload --------------------------------------------------------------------

def test_synthetic_jobs_never_ask_for_more_gpus_than_a_node_has_and_come_in_order():
    jobs = list(synthetic_jobs(2000, total_gpus=40, gpus_per_node=2, seed=1))
    assert {j.spec.gpus for j in jobs} == {1, 2}
    assert all(a.submit_s <= b.submit_s for a, b in pairwise(jobs))
    assert all(120 <= j.duration_s <= 86400 for j in jobs)
    assert jobs[0].enqueued_at > EPOCH


def test_synthetic_arrivals_offer_the_load_asked_for():
    jobs = list(synthetic_jobs(20000, total_gpus=800, load=0.5, seed=2))
    offered = sum(j.spec.gpus * j.duration_s for j in jobs) / (800 * jobs[-1].submit_s)
    assert offered == pytest.approx(0.5, rel=0.15)
    assert {j.spec.gpus for j in jobs} == {g for _, g in SIZES}


def test_a_synthetic_fleet_mixes_models_and_zones():
    fleet = synthetic_fleet(200, seed=4)
    assert len({n.gpus[0].name for n in fleet}) == 4 and len({n.labels["zone"] for n in fleet}) == 4
    assert all(len(n.gpus) == 8 for n in fleet) and len({n.name for n in fleet}) == 200


# -- workload files ----------------------------------------------------------------------------

def write(tmp_path, text: str):
    path = tmp_path / "w.csv"
    path.write_text(text)
    return path


def test_a_workload_csv_is_read_in_submit_order_with_its_optional_columns(tmp_path):
    path = write(tmp_path, "submit,gpus,duration_s,gpu_model,gpu_memory_mb,priority,node_selector,job_id\n"
                           "# a comment line\n"
                           "30,2,600,a100,40000,5,zone=a;tier=prod,train-1\n"
                           "0.5,1,60,,,,,\n")
    first, second = read_workload(path)
    assert (first.submit_s, first.spec.job_id, first.spec.gpus) == (0.5, "line-4", 1)
    assert second.spec == replace(second.spec, job_id="train-1", gpus=2, gpu_model="a100",
                                  gpu_memory_mb=40000, priority=5,
                                  node_selector={"zone": "a", "tier": "prod"})
    assert second.duration_s == 600


def test_iso_times_become_seconds_after_the_first(tmp_path):
    path = write(tmp_path, "submit,gpus,duration_s\n"
                           "2024-03-01T10:00:30Z,1,5\n2024-03-01T10:00:00+00:00,1,5\n")
    assert [j.submit_s for j in read_workload(path)] == [0.0, 30.0]


@pytest.mark.parametrize(("body", "expected"), [
    ("x,1,5\n", "line 2: submit must be seconds (a number >= 0) or an ISO 8601 time, got 'x'"),
    ("-1,1,5\n", "line 2: submit must be seconds"),
    ("0,two,5\n", "line 2: gpus must be a whole number >= 0, got 'two'"),
    ("0,1,-5\n", "line 2: duration_s must be a number of seconds >= 0, got '-5'"),
    ("0,1,nan\n", "line 2: duration_s"),
    ("0,1\n", "line 2: has 2 fields, the header has 3"),
])
def test_a_bad_row_is_refused_naming_its_line_and_column(tmp_path, body, expected):
    with pytest.raises(WorkloadError) as e:
        read_workload(write(tmp_path, "submit,gpus,duration_s\n" + body))
    assert expected in e.value.message


def test_every_bad_line_is_named_not_only_the_first(tmp_path):
    body = "submit,gpus,duration_s,priority,node_selector\n0,1,5,2000,\n1,1,5,0,zone\n2,1,5,0,\n"
    with pytest.raises(WorkloadError) as e:
        read_workload(write(tmp_path, body))
    assert "line 2: priority must be a whole number from -1000 to 1000" in e.value.message
    assert "line 3: node_selector must be key=value pairs" in e.value.message
    assert "line 4" not in e.value.message


def test_a_file_with_many_bad_lines_names_the_first_twenty_and_counts_the_rest(tmp_path):
    # Given 25 lines with a negative duration
    body = "submit,gpus,duration_s\n" + "0,1,-5\n" * 25
    # When it is read, Then the error (one of overlay's) lists 20 lines and says how many more
    with pytest.raises(OverlayError) as e:
        read_workload(write(tmp_path, body))
    assert isinstance(e.value, WorkloadError) and len(e.value.fields["errors"]) == 20
    assert "line 21:" in e.value.message and "line 22:" not in e.value.message
    assert e.value.message.endswith("… and 5 more")


@pytest.mark.parametrize(("text", "expected"), [
    ("gpus,duration_s\n1,5\n", "missing column 'submit'"),
    ("submit,gpus,duration_s,colour\n0,1,5,red\n", "unknown column 'colour'"),
    ("submit,gpus,duration_s\n", "no jobs after the header"),
    ("submit,gpus,duration_s,job_id\n0,1,5,a\n1,1,5,a\n", "line 3: job_id repeats an earlier line's"),
    ("submit,gpus,duration_s\n0,1,5\n2024-01-01T00:00:00,1,5\n", "mixes seconds and ISO 8601 times"),
])
def test_a_bad_file_is_refused_saying_why(tmp_path, text, expected):
    with pytest.raises(WorkloadError, match=expected):
        read_workload(write(tmp_path, text))


def test_the_shipped_example_workload_reads():
    jobs = read_workload(Path(__file__).resolve().parents[2] / "examples/workload.csv")
    assert len(jobs) >= 20 and {j.spec.gpus for j in jobs} >= {1, 2, 4, 8}


# -- the command -------------------------------------------------------------------------------

def test_the_command_prints_a_row_per_policy_and_writes_json_and_an_svg_chart(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(simulate_command, ["--nodes", "20", "--jobs", "2000", "--seed", "1",
                                                   "--policy", "first-fit", "--policy", "spread",
                                                   "--processes", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.output.splitlines()[1:3]]
    assert rows == ["first-fit", "spread"]
    saved = json.loads((out / "results.json").read_text())
    assert [p["policy"] for p in saved["policies"]] == ["first-fit", "spread"]
    assert saved["policies"][0]["jobs"] == 2000 and saved["config"]["nodes"] == 20
    svg = ET.parse(out / "chart.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 4  # 2 panels x 2 policies


def test_the_command_replays_a_workload_file_and_refuses_a_bad_one(tmp_path):
    good = write(tmp_path, "submit,gpus,duration_s\n0,8,10\n1,8,10\n")
    result = CliRunner().invoke(simulate_command, ["--nodes", "1", "--workload", str(good),
                                                   "--policy", "best-fit", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "best-fit" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("submit,gpus,duration_s\n0,x,10\n")
    refused = CliRunner().invoke(simulate_command, ["--nodes", "1", "--workload", str(bad),
                                                    "--out", str(tmp_path / "o")])
    assert refused.exit_code == 1 and "line 2: gpus" in refused.output
    both = CliRunner().invoke(simulate_command, ["--workload", str(good), "--jobs", "5"])
    assert both.exit_code == 2 and "--jobs is for synthetic jobs" in both.output


def test_nodes_of_a_simulated_fleet_are_node_snapshots():
    assert all(isinstance(n, NodeSnapshot) for n in synthetic_fleet(3))


def test_overlay_simulate_runs_through_the_installed_cli_which_loads_it_only_when_asked(tmp_path):
    overlay_cli = Path(sys.executable).with_name("overlay")
    example = Path(__file__).resolve().parents[2] / "examples" / "workload.csv"
    out = tmp_path / "sim"
    run = subprocess.run([str(overlay_cli), "simulate", "--nodes", "4", "--workload", str(example),
                          "--policy", "best-fit", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "best-fit" in run.stdout and (out / "chart.svg").exists()
    listed = subprocess.run([str(overlay_cli), "--help"], capture_output=True, text=True, timeout=60)
    assert "simulate" in listed.stdout
    # Every other subcommand starts without paying for the simulator's imports
    probe = "import sys; import cli.main; print('cli.workload_files' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "False"
