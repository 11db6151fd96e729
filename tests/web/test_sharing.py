"""Sharing a cluster over the API: admins create accounts, users and tokens; a user's token
sees only their jobs (a coordinator their account's); usage and share are reported."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import text

from web.app import create_app
from web.deps import ApiDeps
from web.dispatch import Dispatcher
from web.waiter import JobWaiter

ADMIN = "admin-token-5e6f"


@pytest.fixture
def client(settings, sessions):
    configured = replace(settings, overlay_admin_token=ADMIN)
    deps = ApiDeps(settings=configured, sessions=sessions, dispatcher=Dispatcher(configured.redis_url),
                   waiter=JobWaiter(configured.database_url))
    yield create_app(configured, deps=deps).test_client()
    deps.waiter.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(client) -> dict[str, str]:
    """vision (quota 8, share 2) with alice and bob (its coordinator), nlp (share 1) with
    carol; each user's token."""
    admin = bearer(ADMIN)
    assert client.post("/api/admin/accounts", json={"name": "vision", "quota": 8, "share": 2},
                       headers=admin).status_code == 201
    assert client.post("/api/admin/accounts", json={"name": "nlp", "quota_models": {"h100": 2}},
                       headers=admin).status_code == 201
    for name, body in (("alice", {"accounts": ["vision"]}),
                       ("bob", {"accounts": ["vision"], "coordinator_of": ["vision"]}),
                       ("carol", {"accounts": ["nlp"]})):
        assert client.post("/api/admin/users", json={"name": name, **body}, headers=admin).status_code == 201
    out = {}
    for name in ("alice", "bob", "carol"):
        created = client.post("/api/admin/tokens", json={"user": name}, headers=admin)
        assert created.status_code == 201, created.json
        out[name] = created.json["token"]
    return out


def submit(client, token: str, job_id: str, **body) -> dict:
    response = client.post("/api/jobs", json={"job_id": job_id, "cmd": ["true"], **body},
                           headers=bearer(token))
    assert response.status_code == 201, response.json
    return response.json


def test_the_admin_api_shows_accounts_with_quotas_users_and_coordinators(client, tokens):
    listed = client.get("/api/admin/accounts", headers=bearer(ADMIN)).json["accounts"]
    accounts = {a["name"]: a for a in listed}
    assert accounts["vision"] == {"name": "vision", "share": 2.0, "quota": 8, "quota_models": {},
                                  "users": ["alice", "bob"], "coordinators": ["bob"]}
    assert accounts["nlp"]["quota"] is None and accounts["nlp"]["quota_models"] == {"h100": 2}
    assert client.get("/api/admin/users/carol", headers=bearer(ADMIN)).json == {
        "name": "carol", "default_account": "nlp", "accounts": ["nlp"], "coordinator_of": []}
    # And a user's token cannot use the admin routes
    assert client.get("/api/admin/accounts", headers=bearer(tokens["alice"])).status_code == 403
    assert client.post("/api/admin/users", json={"name": "x", "accounts": ["nope"]},
                       headers=bearer(ADMIN)).status_code == 404


def test_a_job_records_its_user_and_account_and_may_only_name_one_of_theirs(client, tokens):
    job = submit(client, tokens["alice"], "a1")
    assert (job["user"], job["account"], job["borrowed"]) == ("alice", "vision", False)
    refused = client.post("/api/jobs", json={"cmd": ["true"], "account": "nlp"},
                          headers=bearer(tokens["alice"]))
    assert refused.status_code == 403 and "nlp" in refused.json["message"]
    assert refused.json["errors"]["account"] == "nlp"


def test_a_user_sees_reads_follows_and_cancels_only_their_own_jobs(client, tokens):
    submit(client, tokens["alice"], "a1")
    submit(client, tokens["bob"], "b1")
    submit(client, tokens["carol"], "c1")
    alice, bob, carol = (bearer(tokens[n]) for n in ("alice", "bob", "carol"))
    # Then each list holds only what its caller may see: bob coordinates vision
    def listed(headers):
        page = client.get("/api/jobs", headers=headers).json
        return {j["job_id"] for j in page["jobs"]}, page["total"]
    assert listed(alice) == ({"a1"}, 1)
    assert listed(bob) == ({"a1", "b1"}, 2)
    assert listed(carol) == ({"c1"}, 1)
    assert listed(bearer(ADMIN)) == ({"a1", "b1", "c1"}, 3)
    # And another user's job is a 403 to read, follow or cancel
    for method, path in (("get", "/api/jobs/a1"), ("get", "/api/jobs/a1/logs"),
                         ("post", "/api/jobs/a1/cancel")):
        response = getattr(client, method)(path, headers=carol)
        assert response.status_code == 403, (path, response.status_code)
        assert "alice" in response.json["message"]
    assert client.get("/api/jobs/a1", headers=bob).status_code == 200  # the coordinator
    assert client.get("/api/jobs/a1/logs", headers=alice).status_code == 200
    assert client.post("/api/jobs/a1/cancel", headers=alice).json["state"] == "CANCELLED"


def test_a_waiting_job_shows_its_priority_and_its_parts(client, tokens):
    submit(client, tokens["alice"], "a1", priority=3)
    priority = client.get("/api/jobs/a1", headers=bearer(tokens["alice"])).json["priority"]
    assert priority["priority"] == 300.0  # 100 per point
    assert priority["fairshare_factor"] == 1.0 and priority["fairshare"] == 10000.0  # no usage yet
    assert priority["value"] == pytest.approx(priority["priority"] + priority["age"] + priority["fairshare"]
                                              + priority["user"])


def test_a_revoked_token_is_refused_and_a_request_without_one_too_once_users_have_tokens(client, tokens):
    assert client.get("/api/jobs").status_code == 401
    listed = client.get("/api/admin/tokens?user=alice", headers=bearer(ADMIN)).json["tokens"]
    assert len(listed) == 1 and "token" not in listed[0]
    key = listed[0]["key"]
    assert client.post(f"/api/admin/tokens/{key}/revoke", headers=bearer(ADMIN)).json["revoked_at"]
    assert client.get("/api/jobs", headers=bearer(tokens["alice"])).status_code == 401
    assert client.get("/api/jobs", headers=bearer(tokens["bob"])).status_code == 200


def test_no_token_is_stored_in_the_clear(client, tokens, sessions):
    with sessions() as s:
        dump = "\n".join(s.execute(text("select api_tokens::text from api_tokens")).scalars())
    assert dump and not any(t in dump or t.split("_", 2)[2] in dump for t in tokens.values())


def test_usage_and_share_answer_per_group(client, tokens):
    usage = client.get("/api/usage?group_by=user&since=2026-01-01T00:00:00Z", headers=bearer(tokens["alice"]))
    assert usage.status_code == 200 and usage.json["group_by"] == "user" and usage.json["rows"] == []
    share = client.get("/api/share", headers=bearer(tokens["alice"])).json
    rows = {a["account"]: a for a in share["accounts"]}
    assert rows["vision"]["normalized_share"] == pytest.approx(2 / 3)
    assert rows["nlp"]["fairshare_factor"] == 1.0
    assert client.get("/api/usage?group_by=node").status_code in (401, 422)


def test_metrics_count_gpu_seconds_by_account_and_user(client, tokens, sessions):
    # Given the running totals hold 180 GPU-seconds of carol's in nlp (tests/store/test_sharing.py
    # shows releases keep them)
    with sessions.begin() as s:
        s.execute(text("insert into usage_totals values ('nlp', 'carol', 180.0)"))
    body = client.get("/metrics").get_data(as_text=True)
    assert 'overlay_gpu_seconds_total{account="nlp",user="carol"} 180.0' in body
