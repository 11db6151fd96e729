"""The OpenAPI spec is generated from the views and lists every endpoint with a summary."""

from __future__ import annotations

import re

import pytest

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def spec_path(rule: str) -> str:
    """Flask's ``/api/jobs/<job_id>`` is OpenAPI's ``/api/jobs/{job_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


# Not endpoints of the API: files, the spec itself and its page, the dashboard page
UNDOCUMENTED = {"static", "api-docs.openapi_json", "api-docs.openapi_swagger_ui", "dashboard.index"}


def documented_routes(app) -> list[tuple[str, str]]:
    return sorted(
        (spec_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in UNDOCUMENTED
        for method in rule.methods - IGNORED_METHODS
    )


def test_every_route_is_in_the_spec_with_a_summary(app, client):
    spec = client.get("/openapi.json").json
    routes = documented_routes(app)
    # everything under /api, and /metrics, /health and /ready
    assert {p for p, _ in routes} >= {"/api/jobs", "/api/nodes", "/metrics", "/health", "/ready"}
    missing = [r for r in routes if r[1] not in spec["paths"].get(r[0], {})]
    assert not missing, f"routes not in /openapi.json: {missing}"
    unsummarised = [r for r in routes if not spec["paths"][r[0]][r[1]].get("summary")]
    assert not unsummarised, f"operations without a summary: {unsummarised}"


@pytest.mark.parametrize(("path", "method"), [("/api/jobs", "post"), ("/api/jobs/{job_id}/logs", "get")])
def test_parameters_and_bodies_come_from_the_schemas(client, path, method):
    operation = client.get("/openapi.json").json["paths"][path][method]
    if method == "post":
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"].endswith("/JobSubmit")
    else:
        assert "offset" in {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert "text/plain" in operation["responses"]["200"]["content"]


def test_ready_documents_its_503(client):
    responses = client.get("/openapi.json").json["paths"]["/ready"]["get"]["responses"]
    assert responses["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/Ready")


def test_the_docs_page_is_served(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert b"swagger-ui" in page.data and b"openapi.json" in page.data


def submit_schema(client) -> dict:
    return client.get("/openapi.json").json["components"]["schemas"]["JobSubmit"]


def test_the_spec_states_that_the_program_must_not_be_blank_and_no_string_holds_a_nul(client):
    cmd = submit_schema(client)["properties"]["cmd"]
    program = re.compile(cmd["prefixItems"][0]["pattern"])
    assert program.search("python") and not program.search("") and not program.search(" \t")
    assert not program.search("a\x00") and not re.search(cmd["items"]["pattern"], "a\x00b")


def test_the_spec_states_env_names_overlay_reserves_and_sizes_as_property_counts(client):
    env = submit_schema(client)["properties"]["env"]
    assert "CUDA_VISIBLE_DEVICES" in env["propertyNames"]["not"]["enum"]
    assert env["maxProperties"] == 256 and "maxLength" not in env


def test_the_spec_states_gpu_details_need_gpus(client):
    # A body with gpu_model and no gpus matches neither branch; with gpus >= 1 the first
    assert {"required": ["gpus"], "properties": {"gpus": {"minimum": 1}}} in submit_schema(client)["anyOf"]


def test_the_spec_names_the_supported_policies_as_the_only_choices(client):
    change = client.get("/openapi.json").json["components"]["schemas"]["PolicyChange"]
    assert change["properties"]["policy"]["enum"] == client.get("/api/policies").json["supported"]


@pytest.mark.parametrize(("body", "words"), [({"policy": ""}, "unknown policy ''"),
                                              ({"policy": "fastest"}, "unknown policy 'fastest'")])
def test_a_policy_outside_the_enum_is_a_422_naming_the_supported_ones(client, body, words):
    answer = client.put("/api/policies/active", json=body)
    assert answer.status_code == 422
    assert words in answer.json["errors"]["policy"][0] and "best-fit" in answer.json["message"]
