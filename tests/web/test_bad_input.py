"""Every bad request gets a 4xx naming the field and the reason, and writes nothing."""

from __future__ import annotations

import pytest

GOOD = {"job_id": "ok-1", "cmd": ["echo", "hi"]}

BAD_BODIES = [
    # (body, field named in the errors, words in the reason)
    ({"job_id": "x"}, "cmd", "Missing data"),
    ({"cmd": []}, "cmd", "Length"),
    ({"cmd": "echo hi"}, "cmd", "Not a valid list"),
    ({"cmd": ["echo", 1]}, "cmd.1", "Not a valid string"),
    ({"cmd": [""]}, "cmd", "must not be empty"),
    ({**GOOD, "gpus": "2"}, "gpus", "Not a valid integer"),
    ({**GOOD, "gpus": 1.5}, "gpus", "Not a valid integer"),
    ({**GOOD, "gpus": True}, "gpus", "Not a valid integer"),
    ({**GOOD, "gpus": -1}, "gpus", "greater than or equal to 0"),
    ({**GOOD, "gpu_memory_mb": -5, "gpus": 1}, "gpu_memory_mb", "greater than or equal to 0"),
    ({**GOOD, "max_retries": -1}, "max_retries", "greater than or equal to 0"),
    ({**GOOD, "timeout_s": 0}, "timeout_s", "greater than or equal to 1"),
    ({**GOOD, "priority": "high"}, "priority", "Not a valid integer"),
    ({**GOOD, "colour": "red"}, "colour", "Unknown field"),
    ({**GOOD, "job_id": "a/b"}, "job_id", "must match"),
    ({**GOOD, "job_id": "../../etc"}, "job_id", "must match"),
    ({**GOOD, "job_id": ".."}, "job_id", "only dots"),
    ({**GOOD, "job_id": "x" * 129}, "job_id", "must match"),
    ({**GOOD, "job_id": ""}, "job_id", "must match"),
    ({**GOOD, "env": {"A": 1}}, "env.A.value", "Not a valid string"),
    ({**GOOD, "env": {"1A": "x"}}, "env.1A.key", "not a valid variable name"),
    ({**GOOD, "env": {"CUDA_VISIBLE_DEVICES": "0"}}, "env", "set by overlay"),
    ({**GOOD, "env": ["A=1"]}, "env", "Not a valid mapping"),
    ({**GOOD, "node_selector": {"zone": 1}}, "node_selector.zone.value", "Not a valid string"),
    ({**GOOD, "gpu_model": "a100"}, "gpus", "need gpus >= 1"),
    ({**GOOD, "image": 5}, "image", "Not a valid string"),
    ({**GOOD, "nodes": 0}, "nodes", "greater than or equal to 1"),
    ({**GOOD, "nodes": 65}, "nodes", "less than or equal to 64"),
    ({**GOOD, "nodes": "2"}, "nodes", "Not a valid integer"),
    ({**GOOD, "job_id": "sweep", "nodes": 2, "array": "0-3"}, "nodes", "cannot be a job array"),
]


@pytest.mark.parametrize(("body", "field", "words"), BAD_BODIES, ids=lambda v: str(v)[:40])
def test_a_bad_field_is_422_naming_it_and_writes_nothing(client, count_rows, body, field, words):
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["errors"], response.json
    assert words in " ".join(response.json["errors"][field])
    assert field in response.json["message"]
    assert count_rows() == (0, 0)


def test_malformed_json_is_400_and_writes_nothing(client, count_rows):
    response = client.post("/api/jobs", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "Invalid JSON" in response.json["message"]
    assert count_rows() == (0, 0)


@pytest.mark.parametrize("body", ["[1, 2]", '"cmd"', "42", "null"])
def test_a_body_that_is_not_an_object_is_4xx_and_writes_nothing(client, count_rows, body):
    response = client.post("/api/jobs", data=body, content_type="application/json")
    assert response.status_code in (400, 422)
    assert response.json["message"]
    assert count_rows() == (0, 0)


def test_a_body_over_one_mib_is_413_and_writes_nothing(client, count_rows):
    huge = {"cmd": ["echo", "x" * (1024 * 1024)]}
    response = client.post("/api/jobs", json=huge)
    assert response.status_code == 413
    assert response.json["code"] == 413
    assert count_rows() == (0, 0)


def test_an_argv_over_the_limit_is_rejected(client, count_rows):
    response = client.post("/api/jobs", json={"cmd": ["echo"] + ["y" * 1000] * 200})
    assert response.status_code == 422
    assert "cmd" in response.json["errors"]
    assert count_rows() == (0, 0)


@pytest.mark.parametrize(
    "query", ["state=BOGUS", "limit=0", "limit=abc", "offset=-1", "limit=501"]
)
def test_a_bad_list_query_is_422_naming_the_parameter(client, query):
    response = client.get(f"/api/jobs?{query}")
    assert response.status_code == 422
    assert query.split("=")[0] in response.json["errors"]
