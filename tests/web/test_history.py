"""/api/admin/history streams the recorded fleet and jobs; `overlay simulate --from-history`
replays them under other policies beside what happened."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from cli import history
from overlay.gpus.fake import FakeProbe
from overlay.model import Placement
from overlay.states import JobState
from overlay.store import gangs, moves
from overlay.store import jobs as job_store
from overlay.store import nodes as node_store
from overlay.store.jobs import Ending

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def ran(client, sessions, job_id: str, *, gpus: tuple[int, ...], submit_s: float, placed_s: float,
        run_s: float, account: str = "default") -> None:
    """A job submitted, placed on node-a's ``gpus``, run for ``run_s`` and DONE, at those times."""
    at = T0 + timedelta(seconds=submit_s)
    response = client.post("/api/jobs", json={"job_id": job_id, "cmd": ["train"], "gpus": len(gpus)})
    assert response.status_code == 201
    with sessions.begin() as s:
        row = job_store.get_job(s, job_id)
        row.enqueued_at = at  # submitted at ``submit_s``, as recorded
        placed = T0 + timedelta(seconds=placed_s)
        job = job_store.place(s, job_id, Placement(node="node-a", gpus=gpus), now=placed)
        gangs.start(s, job_id, attempt=job.attempt, part=0, node="node-a", now=placed)
        moves.finish(s, job_id, attempt=job.attempt, target=JobState.DONE, reason=None,
                         now=placed + timedelta(seconds=run_s), ending=Ending(exit_code=0, log_tail=""))


def test_the_history_streams_the_fleet_then_the_jobs_that_ran_and_replays_them(client, sessions) -> None:
    # Given node-a (4 GPUs) and three recorded jobs: a 3-GPU one that made a 2-GPU one wait 100 s
    with sessions.begin() as s:
        node_store.record_heartbeat(s, name="node-a", hostname="a", labels={}, agent_health={},
                                    report=FakeProbe(node_name="node-a").sample(), now=T0)
    ran(client, sessions, "big", gpus=(0, 1, 2), submit_s=0, placed_s=0, run_s=100)
    ran(client, sessions, "pair", gpus=(0, 1), submit_s=10, placed_s=110, run_s=50)
    ran(client, sessions, "one", gpus=(3,), submit_s=20, placed_s=20, run_s=30)
    assert client.post("/api/jobs", json={"job_id": "waiting", "cmd": ["x"]}).status_code == 201

    # When the admin history of the last 3 days is read
    response = client.get("/api/admin/history?since_s=259200")
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    lines = response.get_data(as_text=True).splitlines()

    # Then: since, the node, then the jobs that ran in submit order (not the waiting one)
    items = [json.loads(line) for line in lines]
    assert "since" in items[0] and items[1]["node"]["name"] == "node-a" and len(items[1]["node"]["gpus"]) == 4
    assert [i["job"]["job_id"] for i in items[2:]] == ["big", "pair", "one"]

    # And replayed on the same fleet under first-fit, beside what happened
    recorded = history.parse(lines)
    assert [(j.spec.job_id, j.submit_s, j.duration_s) for j in recorded.jobs] == [
        ("big", 0.0, 100.0), ("pair", 10.0, 50.0), ("one", 20.0, 30.0)]
    report = history.run(recorded, ["first-fit"])
    named = ("wait", "default")
    table = {" ".join(row.split()[:2] if row.startswith(named) else row.split()[:1]): row.split()
             for row in report if row.strip()}
    # pair waited 100 s (placed 10 s after big ended); first-fit places it as big ends, at 90 s
    assert table["wait p99"][2:] == ["1m40s", "1m30s"]  # recorded, first-fit
    assert table["jobs"][1:] == ["3", "3"]
    # utilization over the window 0..20 s: big's 3 GPUs and one's from 20 s: 60 of 80 GPU-seconds
    assert table["utilization"][1:] == ["75.0%", "75.0%"]


def test_a_history_with_nothing_in_it_says_so(client) -> None:
    lines = client.get("/api/admin/history?since_s=60").get_data(as_text=True).splitlines()
    assert history.run(history.parse(lines), ["best-fit"])[0].startswith("no job ran to an end since ")
