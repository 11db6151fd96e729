"""Bearer tokens: /api/ needs the API token, admin routes the admin token; probes stay open."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from web.app import create_app
from web.auth import Role, bearer_token, open_warning, required_role, warn_if_open
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter

USER, ADMIN = "user-token-1f2e", "admin-token-9c8b"


@pytest.fixture
def make_client(settings, sessions):
    waiters = []

    def make(**tokens: str):
        configured = replace(settings, **tokens)
        waiter = JobWaiter(configured.database_url)
        waiters.append(waiter)
        deps = ApiDeps(settings=configured, sessions=sessions,
                            dispatcher=Dispatcher(configured.redis_url), waiter=waiter)
        return create_app(configured, deps=deps).test_client()

    yield make
    for waiter in waiters:
        waiter.close()


@pytest.fixture
def client(make_client):
    return make_client(overlay_api_token=USER, overlay_admin_token=ADMIN)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


USER_ROUTES = [
    ("get", "/api/jobs", None),
    ("post", "/api/jobs", {"cmd": ["true"]}),
    ("get", "/api/jobs/nope", None),
    ("get", "/api/jobs/nope/logs", None),
    ("post", "/api/jobs/nope/cancel", None),
    ("get", "/api/nodes", None),
    ("get", "/api/policies", None),
    ("get", "/api/no-such-route", None),
]
ADMIN_ROUTES = [
    ("post", "/api/admin/jobs/nope/state", {"state": "FAILED"}),
    ("post", "/api/nodes/node-a/drain", None),
    ("post", "/api/nodes/node-a/undrain", None),
    ("put", "/api/policies/active", {"policy": "spread"}),
]


@pytest.mark.parametrize(("method", "path", "body"), USER_ROUTES + ADMIN_ROUTES)
@pytest.mark.parametrize("token", [None, "wrong", f"{USER}x", USER[:-1]])
def test_every_api_route_without_a_valid_token_is_401_with_the_error_shape(client, method, path, body,
                                                                           token, count_rows):
    headers = bearer(token) if token else {}
    response = getattr(client, method)(path, json=body, headers=headers)
    assert response.status_code == 401
    assert set(response.json) == {"code", "status", "message", "errors"}
    assert response.json["code"] == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.lower().startswith("bearer ") and "realm=overlay" in challenge.replace('"', '')
    assert ("invalid_token" in challenge) == bool(token)
    assert count_rows() == (0, 0)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_refuse_the_user_token_with_403(client, method, path, body):
    response = getattr(client, method)(path, json=body, headers=bearer(USER))
    assert response.status_code == 403
    assert response.json["code"] == 403 and "admin token" in response.json["message"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_routes_take_the_admin_token(client, method, path, body):
    response = getattr(client, method)(path, json=body, headers=bearer(ADMIN))
    assert response.status_code not in (401, 403)  # 404 for the missing job or node, 200 for the policy


@pytest.mark.parametrize("token", [USER, ADMIN])
def test_user_routes_take_the_user_or_the_admin_token(client, token):
    submitted = client.post("/api/jobs", json={"job_id": f"by-{token}", "cmd": ["true"]},
                            headers=bearer(token))
    assert submitted.status_code == 201
    assert client.get("/api/jobs", headers={"Authorization": f"bearer  {token} "}).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/docs"])
def test_probes_and_the_spec_stay_open(client, path):
    assert client.get(path).status_code == 200


def test_ready_stays_open(client):
    assert client.get("/ready").status_code in (200, 503)  # never 401


def test_without_tokens_the_api_is_open(make_client):
    open_client = make_client()
    assert open_client.get("/api/jobs").status_code == 200
    assert open_client.put("/api/policies/active", json={"policy": "spread"}).status_code == 200


def test_with_only_the_api_token_admin_routes_take_it(make_client):
    only_user = make_client(overlay_api_token=USER)
    assert only_user.put("/api/policies/active", json={"policy": "spread"}).status_code == 401
    assert only_user.put("/api/policies/active", json={"policy": "spread"},
                         headers=bearer(USER)).status_code == 200


def test_with_only_the_admin_token_user_routes_are_open_and_admin_ones_are_not(make_client):
    only_admin = make_client(overlay_admin_token=ADMIN)
    assert only_admin.get("/api/jobs").status_code == 200
    assert only_admin.post("/api/nodes/node-a/drain").status_code == 401
    assert only_admin.post("/api/nodes/node-a/drain", headers=bearer(ADMIN)).status_code == 404


def test_the_spec_describes_the_bearer_scheme_when_tokens_are_set(client):
    spec = client.get("/openapi.json").json
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]


@pytest.mark.parametrize(
    ("path", "role"),
    [("/api/jobs", Role.USER), ("/api", Role.USER), ("/api/admin/jobs/x/state", Role.ADMIN),
     ("/api/admin", Role.ADMIN), ("/api/nodes/n/drain", Role.ADMIN), ("/api/nodes/n/undrain/", Role.ADMIN),
     ("/api/policies/active", Role.ADMIN), ("/api/policies", Role.USER), ("/api/nodes", Role.USER),
     ("/health", None), ("/ready", None), ("/", None), ("/apix", None), ("/metrics", None)],
)
def test_which_paths_need_which_token(path, role):
    assert required_role(path) is role


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
     ("Bearer ", None), (None, None), ("", None), ("abc", None)],
)
def test_bearer_header_parsing(header, token):
    assert bearer_token(header) == token


def test_one_warning_line_when_the_api_is_open(settings, caplog):
    with caplog.at_level(logging.WARNING, logger="web.auth"):
        warn_if_open(settings)
    assert len(caplog.records) == 1 and "open" in caplog.records[0].getMessage()
    assert open_warning(replace(settings, overlay_api_token=USER, overlay_admin_token=ADMIN)) is None
    assert "OVERLAY_ADMIN_TOKEN" in open_warning(replace(settings, overlay_api_token=USER))


def test_tokens_never_reach_the_log(client, caplog):
    with caplog.at_level(logging.DEBUG):
        client.get("/api/jobs", headers=bearer("guess-" + USER))
        client.put("/api/policies/active", json={"policy": "spread"}, headers=bearer(USER))
        client.get("/api/jobs", headers=bearer(USER))
    assert USER not in caplog.text and ADMIN not in caplog.text
