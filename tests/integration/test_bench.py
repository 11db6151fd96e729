"""`make bench`'s harness end to end, with tiny counts: its own stack, every figure, the files."""

from __future__ import annotations

import json

import pytest

from bench import run as bench

pytestmark = pytest.mark.slow

KEYS = {"floor_p50_ms", "floor_jobs_per_s", "e2e_p50_ms", "e2e_p95_ms", "e2e_jobs_per_s",
        "submit_jobs_per_s", "placement_median_us", "pass_10k_ms", "latency_ratio", "throughput_ratio"}


def test_a_tiny_bench_run_measures_floor_and_overlay_side_by_side_and_writes_every_figure(
        monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "QUICK", {"floor_seq": 5, "floor_burst": 20, "e2e_seq": 5, "e2e_burst": 40,
                                         "submits": 40})
    monkeypatch.setattr("sys.argv", ["bench", "--quick", "--repeats", "2", "--out", str(tmp_path)])
    assert bench.main() == 0
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results.keys() >= KEYS
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
