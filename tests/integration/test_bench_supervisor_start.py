"""bench/supervisor_start.py end to end with tiny counts: both ways, alone and on the stack."""

from __future__ import annotations

import json

import pytest

from bench import run as bench_run
from bench import supervisor_start

pytestmark = pytest.mark.slow


def test_a_tiny_run_measures_exec_and_fork_side_by_side_and_keeps_the_figures(monkeypatch, tmp_path,
                                                                              redis_url):
    monkeypatch.setattr(bench_run, "REDIS_URL", redis_url)
    monkeypatch.setattr("sys.argv", ["supervisor_start", "--repeats", "1", "--jobs", "10", "--turnover", "24",
                                     "--alone", "10", "--out", str(tmp_path)])
    assert supervisor_start.main() == 0
    [kept] = tmp_path.glob("supervisor-start-*.json")
    result = json.loads(kept.read_text())
    # Both ways measured alone: every supervisor ran `true` to a clean end, costing CPU
    assert set(result["alone"]) == {"exec", "fork"}
    assert all(figures["cpu_ms"] > 0 and figures["wall_p50_ms"] > 0 for figures in result["alone"].values())
    # and on the stack, the agent under the setting named (the fork run had no fallback)
    [run] = result["runs"]
    assert (run["exec"]["mode"], run["fork"]["mode"]) == ("exec", "fork")
    for key in ("cpu_ms_per_job", "cpu_ms_per_job_agents", "turnover_p50_ms", "true_run_p50_ms"):
        row = result["stack"][key]
        assert row["exec"] > 0 and row["fork"] > 0
        assert row["ratio"] == pytest.approx(run["fork"][key] / run["exec"][key])
