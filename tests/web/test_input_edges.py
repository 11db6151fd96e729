"""Inputs the fuzzer found breaking the API (500s), each now a clear 4xx that changes nothing."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cmd": ["\x00"]}, "cmd.0"),
        ({"cmd": ["echo", "a\x00b"]}, "cmd.1"),
        ({"cmd": ["true"], "env": {"A": "x\x00"}}, "env.A.value"),
        ({"cmd": ["true"], "image": "al\x00pine"}, "image"),
        ({"cmd": ["true"], "node_selector": {"zone": "\x00"}}, "node_selector.zone.value"),
    ],
)
def test_a_nul_character_in_a_submit_is_a_422_naming_the_field(client, count_rows, body, field):
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 422
    assert response.json["errors"][field] == ["must not contain a NUL character"]
    assert count_rows() == (0, 0)


def test_a_nul_in_an_admin_reason_is_a_422(client):
    client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"]})
    response = client.post("/api/admin/jobs/j/state", json={"state": "FAILED", "reason": "\x00"})
    assert response.status_code == 422 and "reason" in response.json["errors"]


@pytest.mark.parametrize("path", ["/api/jobs?offset=9223372036854775808",
                                  "/api/jobs/j/logs?offset=9007199254740992"])
def test_an_offset_past_any_real_size_is_a_422(client, path):
    client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"]})
    response = client.get(path)
    assert response.status_code == 422 and "offset" in response.json["errors"]


@pytest.mark.parametrize("path", ["/api/jobs/%00", "/api/jobs/a%00b/logs", "/api/nodes/%00/drain"])
def test_a_nul_in_a_path_is_not_a_server_error(client, path):
    response = client.post(path) if path.endswith("drain") else client.get(path)
    assert response.status_code == 404


def test_a_whole_number_written_with_a_fraction_is_an_integer_as_json_schema_counts_it(client):
    # The spec can only say "integer", which JSON Schema lets 2.0 be; 2.5 stays refused
    answer = client.post("/api/jobs", json={"job_id": "j", "cmd": ["true"], "gpus": 2.0, "priority": -3.0})
    assert answer.status_code == 201
    assert answer.json["request"]["gpus"] == 2 and answer.json["request"]["priority"] == -3
    assert client.post("/api/jobs", json={"cmd": ["true"], "gpus": 2.5}).status_code == 422


def test_a_blank_program_is_refused_as_the_spec_says(client):
    answer = client.post("/api/jobs", json={"cmd": [" ", "x"]})
    assert answer.status_code == 422 and "must not be empty" in answer.json["message"]
