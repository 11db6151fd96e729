"""Sharing a cluster end to end over real gunicorn, a scheduler and an agent: the admin token
creates accounts, users and tokens with the CLI; a user's token submits, sees only its own
jobs, waits at its account's quota; usage and share are reported; a revoked token is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from tests.integration.harness import BIN, ROOT, Stack, wait_until

pytestmark = pytest.mark.slow
OVERLAY = str(BIN / "overlay")
ADMIN = "admin-token-int-7a1c"


def overlay(stack: Stack, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OVERLAY, "--api", stack.api, "--token", token, *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def get(stack: Stack, path: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{stack.api}{path}", headers=headers, timeout=10)


def submit(stack: Stack, token: str, job_id: str, *cmd: str) -> None:
    r = requests.post(f"{stack.api}/api/jobs", json={"job_id": job_id, "gpus": 1, "cmd": list(cmd)},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 201, r.text


def state(stack: Stack, token: str, job_id: str) -> str:
    return get(stack, f"/api/jobs/{job_id}", token).json()["state"]  # type: ignore[no-any-return]


def test_accounts_users_tokens_ownership_quota_and_usage_over_real_processes(stack, tmp_path: Path):
    # Given the API with an admin token, a scheduler and one agent with 4 GPUs
    stack.env["OVERLAY_ADMIN_TOKEN"] = ADMIN
    stack.start_api(wait=False)
    stack.start_scheduler(wait=False)
    port = stack.start_agent("node-a", fake_gpus="4xNVIDIA A100-SXM4-80GB:81920", wait=False)
    stack.wait_api()
    stack.wait_ready("scheduler")
    stack.wait_agent("node-a", port)
    # When the admin creates two accounts (vision: quota 1; nlp: quota 3) and two users
    ok(overlay(stack, ADMIN, "admin", "account", "add", "vision", "--quota", "1", "--share", "2"))
    ok(overlay(stack, ADMIN, "admin", "account", "add", "nlp", "--quota", "3"))
    ok(overlay(stack, ADMIN, "admin", "user", "add", "alice", "--account", "vision"))
    ok(overlay(stack, ADMIN, "admin", "user", "add", "carol", "--account", "nlp"))
    alice = ok(overlay(stack, ADMIN, "admin", "token", "create", "alice")).strip()
    carol = ok(overlay(stack, ADMIN, "admin", "token", "create", "carol")).strip()
    assert alice.startswith("ovl_") and alice != carol
    # Then a request without a token is refused now that users hold tokens
    assert get(stack, "/api/jobs", None).status_code == 401
    # And alice's job runs as alice in vision
    submit(stack, alice, "a-done", "true")
    wait_until(lambda: state(stack, alice, "a-done") == "DONE", timeout=30, what="a-done to end")
    job = get(stack, "/api/jobs/a-done", alice).json()
    assert (job["user"], job["account"], job["state"]) == ("alice", "vision", "DONE")
    # And carol can neither read it nor see it listed
    assert get(stack, "/api/jobs/a-done", carol).status_code == 403
    assert get(stack, "/api/jobs", carol).json()["total"] == 0
    # When alice holds vision's 1 GPU and asks for another (the 3 idle ones are nlp's quota)
    gate = tmp_path / "gate"
    submit(stack, alice, "a-held", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done")
    wait_until(lambda: state(stack, alice, "a-held") == "RUNNING", timeout=30, what="a-held to run")
    submit(stack, alice, "a-waits", "true")
    wait_until(lambda: get(stack, "/api/jobs/a-waits", alice).json()["reason"], timeout=30,
               what="a-waits to get its reason")
    waiting = get(stack, "/api/jobs/a-waits", alice).json()
    # Then it waits at the quota, and shows its priority
    assert waiting["state"] == "QUEUED"
    assert waiting["reason"] == "account vision at its quota: 1 of 1 GPUs"
    assert waiting["priority"]["fairshare_factor"] < 1.0  # vision has used GPUs now
    # And /api/nodes names the holder's user and account to carol, without its command
    gpus = [g for n in get(stack, "/api/nodes", carol).json()["nodes"] for g in n["gpus"] if g["job_id"]]
    assert [(g["job_id"], g["user"], g["account"]) for g in gpus] == [("a-held", "alice", "vision")]
    # When the held job ends, the waiting one runs
    gate.touch()
    wait_until(lambda: state(stack, alice, "a-waits") == "DONE", timeout=30,
               what="a-waits to run once vision's GPU is free")
    # Then usage and share report vision's GPU time
    usage = ok(overlay(stack, alice, "usage", "--by", "user", "--since", "1d"))
    assert "alice" in usage and "TOTAL" in usage
    share = ok(overlay(stack, alice, "share"))
    assert "vision" in share and "nlp" in share
    assert "overlay_gpu_seconds_total{account=\"vision\",user=\"alice\"}" in requests.get(
        f"{stack.api}/metrics", timeout=10).text
    # And a revoked token is refused from then on, in every API worker
    ok(overlay(stack, ADMIN, "admin", "token", "revoke", alice))
    for _ in range(4):
        assert get(stack, "/api/jobs", alice).status_code == 401
    assert get(stack, "/api/jobs", carol).status_code == 200
