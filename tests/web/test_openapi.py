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
