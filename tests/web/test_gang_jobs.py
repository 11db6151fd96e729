"""Gang jobs in the API: what a submit stores, what GET shows of the parts, and ?part= on logs."""

from __future__ import annotations

from overlay.model import GangPlacement, Placement
from overlay.states import JobState
from overlay.store import gangs
from overlay.store import jobs as job_store
from overlay.store.jobs import Ending


def test_a_gang_job_is_shown_with_its_parts_and_rendezvous_once_placed(client, sessions):
    # Given a 2-node job submitted
    created = client.post("/api/jobs", json={"job_id": "g", "cmd": ["train"], "gpus": 2, "nodes": 2})
    assert created.status_code == 201, created.json
    assert (created.json["nodes"], created.json["request"]["nodes"]) == (2, 2)
    assert client.get("/api/jobs/g").json["parts"] == []
    # When it is placed on node-a and node-b, and part 1 has started
    gang = GangPlacement(node="node-a", gpus=(0, 1), parts=(Placement(node="node-a", gpus=(0, 1)),
                                                           Placement(node="node-b", gpus=(2, 3))))
    with sessions.begin() as s:
        job_store.place(s, "g", gang, ports=(40000, 40000))
        gangs.start(s, "g", attempt=1, part=1, node="node-b")
    # Then GET shows each part's node, GPUs and state, and where they meet
    shown = client.get("/api/jobs/g").json
    assert (shown["state"], shown["node"], shown["master_addr"], shown["master_port"]) == (
        "RUNNING", "node-a", "node-a", 40000)
    assert [(p["part"], p["node"], p["gpus"], p["state"], p["exit_code"]) for p in shown["parts"]] == [
        (0, "node-a", [0, 1], "PLACED", None), (1, "node-b", [2, 3], "RUNNING", None)]
    # and when part 1 fails its exit code is there, and its stored output is its log
    with sessions.begin() as s:
        gangs.finish_part(s, "g", attempt=1, part=1, target=JobState.FAILED, reason="exit code 2",
                          ending=Ending(exit_code=2, log_tail="part one said this\n"))
    shown = client.get("/api/jobs/g").json
    assert shown["state"] == "FAILED" and shown["parts"][1]["exit_code"] == 2
    assert client.get("/api/jobs/g/logs?part=1").get_data(as_text=True) == "part one said this\n"


def test_logs_of_a_part_the_job_does_not_have_are_a_422_naming_part(client):
    client.post("/api/jobs", json={"job_id": "one", "cmd": ["true"]})
    bad = client.get("/api/jobs/one/logs?part=1")
    assert bad.status_code == 422 and "part" in bad.json["errors"], bad.json
    assert "has 1 part: 0..0" in bad.json["message"]
    assert client.get("/api/jobs/one/logs?part=-1").status_code == 422
    assert client.get("/api/jobs/one/logs?part=0").status_code == 200


def test_a_one_node_job_shows_no_parts(client):
    client.post("/api/jobs", json={"job_id": "solo", "cmd": ["true"]})
    shown = client.get("/api/jobs/solo").json
    assert (shown["nodes"], shown["parts"], shown["master_addr"]) == (1, None, None)


def test_part_0s_stored_output_is_its_own_when_another_part_ended_the_job(client, sessions):
    client.post("/api/jobs", json={"job_id": "g0", "cmd": ["train"], "gpus": 1, "nodes": 2})
    gang = GangPlacement(node="node-a", gpus=(0,), parts=(Placement(node="node-a", gpus=(0,)),
                                                        Placement(node="node-b", gpus=(0,))))
    with sessions.begin() as s:
        job_store.place(s, "g0", gang, ports=(40000, 40000))
        gangs.start(s, "g0", attempt=1, part=0, node="node-a")
        gangs.start(s, "g0", attempt=1, part=1, node="node-b")
        gangs.finish_part(s, "g0", attempt=1, part=0, target=JobState.DONE, reason=None,
                          ending=Ending(exit_code=0, log_tail="part zero\n"))
        gangs.finish_part(s, "g0", attempt=1, part=1, target=JobState.FAILED, reason="exit code 3",
                          ending=Ending(exit_code=3, log_tail="part one\n"))
    # (no log file here: the logs are the other hosts'; the stored tails answer)
    assert client.get("/api/jobs/g0/logs").get_data(as_text=True) == "part zero\n"
    assert client.get("/api/jobs/g0/logs?part=1").get_data(as_text=True) == "part one\n"
