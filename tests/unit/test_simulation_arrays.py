"""The simulator honours arrays' %N limits and dependencies, as the real pass does; the
workload CSV's array and depends_on columns."""

from __future__ import annotations

from collections import Counter

import pytest

from cli.workload_files import read_workload
from overlay.errors import WorkloadError
from overlay.policies import get_policy
from overlay.simulation import SimEvent, simulate
from overlay.workload import synthetic_fleet

CSV = """submit,job_id,gpus,duration_s,array,depends_on
0,prep,1,100,,
0,sweep,1,50,0-9%3,afterok:prep
10,train,2,100,,
20,report,1,10,,afterok:sweep;afterany:train
20,alert,1,10,,afternotok:train
"""


@pytest.mark.parametrize("backfill", [False, True])
def test_a_workload_with_an_array_and_dependencies_replays_them(tmp_path, backfill):
    path = tmp_path / "w.csv"
    path.write_text(CSV)
    jobs = read_workload(path)
    assert [j.job_id for j in jobs[:3]] == ["prep", "sweep_0", "sweep_1"]
    assert jobs[1].array_limit == 3 and jobs[1].spec.array_index == 0
    events: list[SimEvent] = []
    result = simulate(synthetic_fleet(1, 8), jobs, policy=get_policy("first-fit"), observer=events.append,
                      backfill=backfill)
    starts = {e.job.job_id: e.at_s for e in events if e.kind == "start"}
    ends = {e.job.job_id: e.at_s for e in events if e.kind == "end"}
    # every task ran once, never more than 3 at a time, and only after prep ended
    assert sorted(j for j in starts if j.startswith("sweep_")) == sorted(f"sweep_{i}" for i in range(10))
    running = Counter()
    for e in sorted(events, key=lambda e: (e.at_s, e.kind == "start")):
        if e.job.spec.array_id == "sweep":
            running["sweep"] += 1 if e.kind == "start" else -1
            assert running["sweep"] <= 3
    assert min(starts[f"sweep_{i}"] for i in range(10)) >= ends["prep"]
    # report waited for every task and for train; alert can never run (train ends DONE)
    assert starts["report"] >= max(max(ends[f"sweep_{i}"] for i in range(10)), ends["train"])
    assert "alert" not in starts
    assert (result.dependency_cancelled, result.dependency_held) == (1, 0)


def test_a_dependency_on_a_later_or_unknown_row_is_refused_naming_the_line(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("submit,job_id,gpus,duration_s,array,depends_on\n0,a,1,1,,afterok:b\n1,b,1,1,,\n"
                    "2,c,1,1,5-3,\n3,d,1,1,,after:b\n")
    with pytest.raises(WorkloadError) as e:
        read_workload(path)
    assert e.value.fields["errors"] == [
        "line 2: depends_on names no earlier job or array: b",
        "line 4: array range 5-3 ends before it starts",
        "line 5: depends_on 'after:b' is not KIND:ID[:ID...] with KIND one of afterok, afterany, afternotok",
    ]
