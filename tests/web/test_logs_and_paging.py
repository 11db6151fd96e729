"""Reading a job's output from a byte offset (how `overlay logs --follow` follows), and paging lists."""

from __future__ import annotations

from pathlib import Path

from overlay.launch import log_path


def write_log(settings, job_id: str, data: bytes) -> Path:
    path = log_path(settings.log_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_logs_from_an_offset_are_the_bytes_after_it(client, settings):
    client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"]})
    write_log(settings, "j", "one\ntwo ✓\n".encode())
    whole = client.get("/api/jobs/j/logs")
    assert whole.text == "one\ntwo ✓\n"
    assert client.get("/api/jobs/j/logs?offset=4").data == "two ✓\n".encode()
    # An offset inside a multi-byte character gives the raw bytes; the follower decodes across reads
    assert client.get("/api/jobs/j/logs?offset=9").data == "✓\n".encode()[1:]
    assert client.get("/api/jobs/j/logs?offset=999").data == b""


def test_a_follower_sees_only_what_was_appended_since(client, settings):
    client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"]})
    path = write_log(settings, "j", b"first\n")
    offset = len(client.get("/api/jobs/j/logs?offset=0").data)
    with open(path, "ab") as f:
        f.write(b"second\n")
    assert client.get(f"/api/jobs/j/logs?offset={offset}").data == b"second\n"


def test_logs_without_a_file_read_the_stored_tail(client):
    client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"]})
    assert client.get("/api/jobs/j/logs?offset=0").data == b""
    assert client.get("/api/jobs/j/logs").text == ""


def test_the_logs_of_a_job_that_does_not_exist_are_a_404_naming_it(client):
    answer = client.get("/api/jobs/nope/logs")
    assert answer.status_code == 404 and "'nope'" in answer.json["message"]


def test_a_negative_or_non_numeric_offset_is_422(client):
    client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"]})
    for bad in ("-1", "x"):
        response = client.get(f"/api/jobs/j/logs?offset={bad}")
        assert response.status_code == 422
        assert "offset" in response.json["errors"]


def test_list_pages_with_limit_and_offset_from_the_query_string(client):
    for i in range(3):
        client.post("/api/jobs", json={"job_id": f"j{i}", "cmd": ["true"]})
    page = client.get("/api/jobs?limit=2&offset=0&state=QUEUED")
    assert page.status_code == 200, page.json
    assert (len(page.json["jobs"]), page.json["total"], page.json["limit"]) == (2, 3, 2)
    assert len(client.get("/api/jobs?limit=2&offset=2").json["jobs"]) == 1
    assert client.get("/api/jobs?limit=1.5").status_code == 422
