"""`make bench`'s harness end to end, with tiny counts: its own stack, every figure, the files."""

from __future__ import annotations

import json

import pytest

from bench import run as bench

pytestmark = pytest.mark.slow

KEYS = {"floor_p50_ms", "floor_jobs_per_s", "e2e_p50_ms", "e2e_p95_ms", "e2e_jobs_per_s",
        "submit_jobs_per_s", "placement_median_us", "pass_10k_ms", "latency_ratio", "throughput_ratio",
        "cpu_ms_per_job", "turnover_p50_ms", "turnover_p95_ms", "turnover_ratio", "pass_10k_db_ms",
        "pass_10k_db_send_ms", "pass_10k_db_placed", "machine"}
TARGETS = ("end-to-end p50", "throughput >=", "submit >=", "array tasks", "CPU per job", "GPU turnover")


def test_a_tiny_bench_run_measures_floor_and_overlay_side_by_side_and_writes_every_figure(
        monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "QUICK", {"floor_seq": 5, "floor_burst": 20, "e2e_seq": 5, "e2e_burst": 40,
                                         "submits": 40, "turnover": 30, "array": 20, "pass_jobs": 200,
                                         "pass_nodes": 20})
    monkeypatch.setattr("sys.argv", ["bench", "--quick", "--repeats", "2", "--out", str(tmp_path)])
    assert bench.main() == 0
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results.keys() >= KEYS
    # The run is kept beside latest.json, with where and on what it was measured
    kept = [p for p in tmp_path.glob("bench-*.json") if p.name != "latest.json"]
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == results
    assert results["machine"]["cores"] >= 1 and results["machine"]["commit"]
    # Every figure is of work done: CPU was spent, GPUs turned over, the pass placed jobs
    assert results["cpu_ms_per_job"] > 0 and results["turnover_p50_ms"] > 0
    assert 0 < results["pass_10k_db_placed"] <= 200
    assert len(results["runs"]) == 2
    # Each figure is the median of the runs, and each run's ratio is of its own figures
    for run in results["runs"]:
        assert run["latency_ratio"] == pytest.approx(run["e2e_p50_ms"] / run["floor_p50_ms"])
    assert min(r["e2e_jobs_per_s"] for r in results["runs"]) <= results["e2e_jobs_per_s"] \
        <= max(r["e2e_jobs_per_s"] for r in results["runs"])
    assert set(results["placement_median_us"]) == {"first-fit", "best-fit", "spread"}
    assert all(v > 0 for v in results["placement_median_us"]["best-fit"].values())
    table = (tmp_path / "latest.md").read_text()
    assert "median of 2 side-by-side run(s)" in table and "latency ratio" in table
    # Every target of issue 17 is printed with whether it is met (or why it was not measured)
    verdicts = table.split("| target (issue 17) | measured | met |")[1].strip().splitlines()[1:]
    assert [t for t in TARGETS if any(t in line for line in verdicts)] == list(TARGETS)
    assert len(verdicts) == len(TARGETS)
    assert all(line.endswith(("| yes |", "| no |", "| - |")) for line in verdicts)


def test_turnover_is_a_gpus_end_to_its_next_start_when_a_job_was_waiting():
    from datetime import datetime, timedelta
    from types import SimpleNamespace as Event

    t = datetime(2026, 1, 1)

    def event(job: str, state: str, at_ms: int, node: str, enqueued_ms: int) -> Event:
        return Event(job_id=job, to_state=state, at=t + timedelta(milliseconds=at_ms), node=node,
                     gpu_indices=[0], enqueued_at=t + timedelta(milliseconds=enqueued_ms))

    # Given two jobs on GPU 0 of node-a, b queued before a ended (and placed 40 ms after it),
    # and c queued after b ended
    events = [
        event("a", "RUNNING", 0, "node-a", 0), event("a", "DONE", 30, "node-a", 0),
        event("b", "PLACED", 70, "node-a", 1),
        event("b", "RUNNING", 130, "node-a", 1), event("b", "DONE", 150, "node-a", 1),
        event("x", "RUNNING", 140, "node-b", 1),
        event("c", "PLACED", 450, "node-a", 400), event("c", "RUNNING", 500, "node-a", 400),
    ]
    # When the gaps are taken
    gaps = bench.turnover_gaps(events)
    # Then only a -> b counts (c was not waiting; x is another node), split at b's placement,
    # and runs are started -> done
    assert gaps.total == [100.0]
    assert (gaps.to_placed, gaps.to_running) == ([40.0], [60.0])
    assert sorted(gaps.runs) == [20.0, 30.0]
