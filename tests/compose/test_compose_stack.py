"""`make up` on a real Docker engine: the seed's quickstart and its milestone 2-4 checks.

The stack runs on a private dockerd (tests/compose/engine.py); its published ports
listen on 127.0.0.1 only. The tests run in file order against one `make up`; the last
ones stop an agent and take the stack down.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.compose.conftest import ROOT, Stack, wait_for

pytestmark = pytest.mark.docker

OVERLAY_SERVICES = ["api", "scheduler", "beat", "agent-a", "agent-b", "flower"]


def service_images(stack: Stack) -> dict[str, str]:
    listed = stack.docker("ps", "-a", "--filter", "label=com.docker.compose.project=overlay",
                          "--format", '{{.Label "com.docker.compose.service"}} {{.Image}}').stdout
    return dict(line.split() for line in listed.splitlines())


def test_make_up_starts_every_service_from_one_image_and_leaves_no_untagged_image(stack):
    # Given the stack `make up` started
    # Then every overlay service runs overlay:dev, the one image built
    images = service_images(stack)
    assert {service: images[service] for service in OVERLAY_SERVICES} == dict.fromkeys(OVERLAY_SERVICES,
                                                                                      "overlay:dev")
    assert stack.docker("images", "-q", "--filter", "dangling=true").stdout.split() == []
    assert len(stack.docker("images", "-q", "--filter", "label=org.opencontainers.image.title=overlay")
               .stdout.split()) == 1


def test_make_up_says_where_the_api_flower_and_their_secrets_are(stack):
    out = stack.up_output
    assert f"http://localhost:{stack.ports['api']}" in out and "OVERLAY_API_TOKEN" in out
    assert f"http://localhost:{stack.ports['flower']}" in out and "FLOWER_BASIC_AUTH" in out
    assert "deploy/.env" in out
    assert not any(secret in out for secret in stack.secrets.values())


def test_the_image_holds_no_env_file_and_no_secret(stack):
    # Given deploy/.env existed when `make up` built the image
    # When the image's files and history are read
    found = stack.docker("run", "--rm", "--entrypoint", "sh", "overlay:dev", "-c",
                         "find / -xdev -name '.env*' -print; ls -a /app").stdout
    history = stack.docker("history", "--no-trunc", "overlay:dev").stdout
    # Then no .env file is in it, nor any of the secrets, in any layer
    assert ".env" not in found and ".git" not in found and ".venv" not in found, found
    assert not any(secret in history for secret in stack.secrets.values())
    needles = [secret.encode() for secret in stack.secrets.values()]
    tail, size = b"", 0
    with subprocess.Popen(["docker", "save", "overlay:dev"], env=stack.env, stdout=subprocess.PIPE) as saved:
        assert saved.stdout is not None
        while chunk := saved.stdout.read(1 << 20):
            window = tail + chunk
            assert not any(needle in window for needle in needles), "a deploy/.env secret is in the image"
            tail, size = window[-128:], size + len(chunk)
    assert saved.returncode == 0 and size > 10_000_000


def test_ready_says_both_stores_answer(stack):
    # Milestone 2, step 3
    def ready():
        status, body = stack.api("GET", "/ready")
        return body if status == 200 else None

    body = wait_for("GET /ready answers 200", ready)
    assert body["postgres"]["ok"] is True and body["redis"]["ok"] is True


def test_a_submitted_job_is_stored_and_its_queue_readable_in_the_seeds_commands(stack):
    # Milestone 2, steps 4-6: submit with the token from deploy/.env, fetch it, look inside
    body = {"job_id": "m2-smoke", "image": "alpine", "cmd": ["echo", "hi"]}
    status, job = stack.api("POST", "/api/jobs", body)
    assert status == 201, job
    status, job = stack.api("GET", "/api/jobs/m2-smoke")
    assert status == 200 and job["timestamps"]["enqueued"], job
    assert stack.api("GET", "/api/jobs/m2-smoke", token="wrong")[0] == 401
    queue = stack.compose("exec", "-T", "redis", "redis-cli", "lrange", "jobs:queue", "0", "-1")
    assert "NOAUTH" not in queue.stdout + queue.stderr and "ERR" not in queue.stdout
    rows = stack.compose("exec", "-T", "postgres", "psql", "-U", "overlay", "-d", "overlay", "-c",
                         "select job_id,status from jobs;").stdout
    assert "m2-smoke" in rows, rows
    status, policies = stack.api("GET", "/api/policies")
    assert status == 200 and policies["active"], policies


def test_nodes_shows_both_agents_with_their_gpus(stack):
    # Milestone 3, step 3
    def both_nodes():
        status, nodes = stack.api("GET", "/api/nodes")
        named = {node["name"]: node for node in nodes["nodes"]} if status == 200 else {}
        return named if {"node-a", "node-b"} <= set(named) else None

    nodes = wait_for("node-a and node-b in /api/nodes", both_nodes)
    for name in ("node-a", "node-b"):
        assert nodes[name]["gpus"], nodes[name]
        assert nodes[name]["last_seen"] and nodes[name]["agent_health"], nodes[name]
    assert {"zone": "a", "tier": "prod"}.items() <= nodes["node-a"]["labels"].items()


def test_a_job_runs_to_done_on_an_agent(stack):
    # Milestone 4: QUEUED -> PLACED -> RUNNING -> DONE, then the queues are readable
    status, job = stack.api("POST", "/api/jobs", {"job_id": "m4-smoke", "image": "", "cmd": ["echo", "hi"]})
    assert status == 201, job
    def ended():
        job = stack.api("GET", "/api/jobs/m4-smoke")[1]
        return job if job["state"] in ("DONE", "FAILED") else None

    job = wait_for("m4-smoke ends", ended)
    if job["state"] != "DONE":
        logs = stack.compose("logs", "--no-color", "--tail", "40", "agent-a", "agent-b", check=False).stdout
        pytest.fail(f"m4-smoke {job['state']}: {job.get('reason')}\n{json.dumps(job)}\n{logs}")
    assert job["node"] in ("node-a", "node-b"), job
    assert stack.compose("exec", "-T", "redis", "redis-cli", "llen", "jobs:queue").stdout.strip().isdigit()
    assigned = stack.compose("exec", "-T", "redis", "redis-cli", "lrange", "assign:node-a", "0", "-1")
    assert "NOAUTH" not in assigned.stdout + assigned.stderr


def test_postgres_and_redis_publish_no_port_and_redis_wants_its_password(stack):
    for service, port in (("postgres", "5432"), ("redis", "6379")):
        published = stack.compose("port", service, port, check=False)
        assert not published.stdout.strip(), f"{service} publishes {published.stdout}"
    no_password = stack.compose("exec", "-T", "redis", "env", "-u", "REDISCLI_AUTH", "redis-cli", "ping",
                                check=False)
    assert "NOAUTH" in no_password.stdout + no_password.stderr
    tcp_without_password = stack.compose("exec", "-T", "postgres", "psql", "-h", "127.0.0.1", "-U", "overlay",
                                         "-d", "overlay", "-w", "-c", "select 1", check=False)
    assert tcp_without_password.returncode != 0


@pytest.mark.parametrize("agent", ["agent-a", "agent-b"])
def test_agents_hold_no_api_token(stack, agent):
    env = stack.compose("exec", "-T", agent, "env").stdout
    assert "OVERLAY_API_TOKEN" not in env and "OVERLAY_ADMIN_TOKEN" not in env
    assert stack.secrets["OVERLAY_API_TOKEN"] not in env and stack.secrets["OVERLAY_ADMIN_TOKEN"] not in env
    assert "DATABASE_URL" in env and "REDIS_URL" in env


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_flower_asks_for_the_login_in_deploy_env(stack):
    url = stack.url("flower", "/")
    assert wait_for("Flower answers", lambda: http_status(url)) == 401
    login = base64.b64encode(stack.secrets["FLOWER_BASIC_AUTH"].encode()).decode()
    assert http_status(url, {"Authorization": f"Basic {login}"}) == 200


def test_a_stopped_agent_drops_out_of_nodes(stack):
    # Milestone 3, step 4
    stack.compose("stop", "agent-a")

    def only_node_b():
        status, nodes = stack.api("GET", "/api/nodes")
        names = {node["name"] for node in nodes["nodes"]} if status == 200 else set()
        return names == {"node-b"}

    wait_for("node-a gone from /api/nodes", only_node_b)


def test_make_down_removes_every_container(stack):
    down = subprocess.run(["make", "down", "HAS_GPU="], cwd=ROOT, env=stack.env, capture_output=True,
                          text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    left = stack.docker("ps", "-a", "-q", "--filter", "label=com.docker.compose.project=overlay").stdout
    assert left.split() == []
