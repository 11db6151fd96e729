"""Arrays and dependencies over HTTP: a 201 with the array (never its tasks), its counts and
pages, cancelling it whole, and 422s that name the field and say why."""

from __future__ import annotations

SWEEP = {"job_id": "sweep", "cmd": ["python", "sweep.py"], "gpus": 1, "array": "0-99%10"}


def test_an_array_is_answered_with_its_counts_and_its_tasks_are_jobs(client, count_rows):
    created = client.post("/api/jobs", json=SWEEP)
    assert created.status_code == 201, created.json
    body = created.json
    assert (body["array_id"], body["size"], body["max_running"], body["counts"]) == ("sweep", 100, 10,
                                                                                     {"QUEUED": 100})
    assert body["tasks"] == []  # never the tasks themselves
    assert count_rows() == (100, 100)
    task = client.get("/api/jobs/sweep_42").json
    assert (task["array_id"], task["array_index"], task["state"]) == ("sweep", 42, "QUEUED")


def test_an_array_shows_its_tasks_page_by_page_and_cancels_whole(client):
    client.post("/api/jobs", json=SWEEP)
    page = client.get("/api/arrays/sweep?limit=3&offset=10").json
    assert [t["job_id"] for t in page["tasks"]] == ["sweep_10", "sweep_11", "sweep_12"]
    assert page["counts"] == {"QUEUED": 100}
    cancelled = client.post("/api/arrays/sweep/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json["counts"] == {"CANCELLED": 100}
    assert client.get("/api/jobs/sweep_7").json["reason"] == "cancelled by user"
    assert client.get("/api/arrays/nope").status_code == 404


def test_an_array_twice_or_over_a_job_is_a_conflict(client):
    assert client.post("/api/jobs", json=SWEEP).status_code == 201
    assert client.post("/api/jobs", json=SWEEP).status_code == 409
    client.post("/api/jobs", json={"job_id": "plain", "cmd": ["true"]})
    assert client.post("/api/jobs", json={**SWEEP, "job_id": "plain"}).status_code == 409


def test_bad_arrays_are_422s_naming_the_field(client, count_rows):
    for expression, why in [("0-100000", "indices 0..99999"), ("5-3", "ends before it starts"),
                            ("1-9%0", "not an array expression"), ("x", "not an array expression")]:
        refused = client.post("/api/jobs", json={**SWEEP, "array": expression})
        assert refused.status_code == 422, expression
        assert "array" in refused.json["errors"], refused.json
        assert why in " ".join(refused.json["errors"]["array"])
    long_id = client.post("/api/jobs", json={**SWEEP, "job_id": "a" * 123})
    assert long_id.status_code == 422 and "job_id" in long_id.json["errors"]
    assert count_rows() == (0, 0)


def test_a_dependent_job_waits_and_unknown_ids_or_cycles_are_422s(client, count_rows):
    client.post("/api/jobs", json={"job_id": "train-1", "cmd": ["train"]})
    created = client.post("/api/jobs", json={"job_id": "eval", "cmd": ["eval"],
                                             "depends_on": {"afterok": ["train-1"]}})
    assert created.status_code == 201, created.json
    assert count_rows() == (2, 2)
    unknown = client.post("/api/jobs", json={"job_id": "x", "cmd": ["x"],
                                             "depends_on": {"afterany": ["train-1", "ghost"]}})
    assert unknown.status_code == 422
    assert unknown.json["errors"]["depends_on"] == ["no job or array ghost"]
    assert unknown.json["errors"]["unknown"] == ["ghost"]
    cycle = client.post("/api/jobs", json={"job_id": "me", "cmd": ["x"], "depends_on": {"afterok": ["me"]}})
    assert cycle.status_code == 422
    assert cycle.json["errors"]["depends_on"] == ["a cycle: me -> me"]
    bad_kind = client.post("/api/jobs", json={"cmd": ["x"], "depends_on": {"after": ["train-1"]}})
    assert bad_kind.status_code == 422 and "depends_on.after" in bad_kind.json["errors"]
    assert count_rows() == (2, 2)
