"""Secrets stay secret and jobs run unprivileged, on real processes.

A job's env values and the API tokens appear in no process's log, no API answer;
with JOB_USER set and the agent running as root, the job runs as that user.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest
import requests

from tests.integration.harness import TERMINAL, wait_until

pytestmark = pytest.mark.slow
API_TOKEN, ADMIN_TOKEN = "tok-user-5d1f3a9e7b", "tok-admin-c2e8b4f6a0"
SECRET = "s3cr3t-value-8e1b7d"


def call(stack, method: str, path: str, token: str = API_TOKEN, **kwargs) -> requests.Response:
    return requests.request(method, f"{stack.api}{path}", headers={"Authorization": f"Bearer {token}"},
                            timeout=10, **kwargs)


def wait_ended(stack, job_id: str, token: str = API_TOKEN) -> dict:
    return wait_until(lambda: (j := call(stack, "GET", f"/api/jobs/{job_id}", token).json())["state"]
                      in TERMINAL and j, timeout=30, what=f"{job_id} to end")


def test_job_env_values_and_tokens_appear_in_no_log_and_no_answer(stack):
    # Given the whole stack logging at DEBUG, with both tokens set
    stack.env.update(OVERLAY_API_TOKEN=API_TOKEN, OVERLAY_ADMIN_TOKEN=ADMIN_TOKEN, LOG_LEVEL="DEBUG")
    stack.start_cluster()
    # When a job with a secret in its env runs (and uses it, without printing it)
    submitted = call(stack, "POST", "/api/jobs", json={
        "job_id": "sec", "cmd": ["sh", "-c", f'test "${{#DB_PASSWORD}}" = {len(SECRET)} && echo used it'],
        "env": {"DB_PASSWORD": SECRET}})
    assert submitted.status_code == 201
    done = wait_ended(stack, "sec")
    assert done["state"] == "DONE"  # the job did get the value
    # and people poke at the API: good and bad tokens, admin routes, a failing request
    assert requests.get(f"{stack.api}/api/jobs", timeout=5).status_code == 401
    assert call(stack, "GET", "/api/jobs", token=API_TOKEN[:-1]).status_code == 401
    assert call(stack, "POST", "/api/nodes/node-a/drain").status_code == 403
    assert call(stack, "POST", "/api/nodes/node-a/undrain", token=ADMIN_TOKEN).status_code == 200
    assert call(stack, "POST", "/api/jobs", json={"job_id": "sec", "cmd": ["true"],
                                                  "env": {"DB_PASSWORD": SECRET}}).status_code == 409
    answers = [call(stack, "GET", path).text for path in
               ("/api/jobs", "/api/jobs?state=DONE", "/api/jobs/sec", "/api/nodes", "/api/jobs/sec/logs")]

    # Then the secret is in no answer (env values come back as ***), the output is the job's own
    assert done["request"]["env"] == {"DB_PASSWORD": "***"}
    assert "used it" in answers[-1]
    assert not [a for a in answers if SECRET in a]
    # and neither the secret nor a token is in any process's log
    logs = {p.name: p.read_text(errors="replace") for p in stack.workdir.glob("*.log")}
    assert {"api.log", "scheduler.log", "beat.log", "node-a.log", "node-b.log"} <= set(logs)
    assert "DEBUG" in logs["api.log"] + logs["node-a.log"]  # they did log at DEBUG
    for name, text in logs.items():
        for secret in (SECRET, API_TOKEN, ADMIN_TOKEN, API_TOKEN[:-1]):
            assert secret not in text, f"{secret!r} is in {name}"


@pytest.fixture
def job_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("running jobs as another user needs an agent running as root")
    try:
        return pwd.getpwnam("overlayjob")
    except KeyError:
        subprocess.run(["useradd", "--system", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "overlayjob"], check=True, capture_output=True)
        return pwd.getpwnam("overlayjob")


def test_with_job_user_set_a_root_agent_runs_jobs_as_that_unprivileged_user(stack, job_user):
    # Given an agent running as root with JOB_USER=overlayjob
    assert os.geteuid() == 0
    stack.start_cluster(agents=("node-a",), beat=False, JOB_USER="overlayjob")
    # When a job reports who it is
    submitted = requests.post(f"{stack.api}/api/jobs", timeout=10, json={
        "job_id": "who", "cmd": ["sh", "-c", 'echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME"']})
    assert submitted.status_code == 201
    done = wait_until(lambda: (j := requests.get(f"{stack.api}/api/jobs/who", timeout=5).json())["state"]
                      in TERMINAL and j, timeout=30, what="the job to end")
    # Then it ran as overlayjob, with that user's group only and its home, not root's
    assert done["state"] == "DONE"
    output = requests.get(f"{stack.api}/api/jobs/who/logs", timeout=5).text
    expected = (f"uid={job_user.pw_uid} gid={job_user.pw_gid} groups={job_user.pw_gid} "
                f"home={job_user.pw_dir}")
    assert expected in output, output
    assert job_user.pw_uid != 0
