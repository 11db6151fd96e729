"""Agents register, heartbeat fake-GPU metrics through beat, and drop out when they die.

Real processes: gunicorn, Celery agents and beat, Postgres and Redis.
"""

from __future__ import annotations

import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import BIN, ROOT, nodes, wait_until

pytestmark = pytest.mark.slow


def test_an_agent_registers_as_soon_as_it_is_ready_without_beat(stack):
    # Given the API and one agent, and no beat
    stack.start_api()
    stack.start_agent("node-a", labels="zone=a,tier=prod")
    # Then the node is listed with its fake GPUs, labels and health at once
    node = nodes(stack)["node-a"]
    assert [g["name"] for g in node["gpus"]] == ["NVIDIA A100-SXM4-80GB"] * 4
    assert node["labels"]["zone"] == "a" and node["labels"]["gpu.model"] == "NVIDIA A100-SXM4-80GB"
    assert node["agent_health"]["metrics_mode"] == "fake"
    assert node["state"] == "online"
    gpu = node["gpus"][0]
    assert gpu["uuid"].startswith("GPU-") and gpu["memory_total_mb"] == 81920
    assert gpu["compute_capability"] == "8.0" and gpu["job_id"] is None


def test_beat_keeps_nodes_fresh_and_a_killed_agent_drops_out_within_the_ttl(stack):
    # Given two agents heartbeating through beat
    stack.start_api()
    stack.start_agent("node-a")
    stack.start_agent("node-b", fake_gpus="2xNVIDIA H100 80GB HBM3:81559")
    stack.start_beat()
    wait_until(lambda: all(n["last_seen_age_s"] < 1.5 for n in nodes(stack).values())
               and len(nodes(stack)) == 2, timeout=15, what="fresh heartbeats from both nodes")
    # When node-a's worker is killed
    stack.kill("node-a")
    # Then within the TTL (4 s here) it is gone from the list, and node-b stays
    wait_until(lambda: set(nodes(stack)) == {"node-b"}, timeout=4 + 3, what="node-a to drop out")
    assert nodes(stack, "?include=offline")["node-a"]["state"] == "offline"
    assert nodes(stack)["node-b"]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"


def test_agent_serves_health_and_dcgm_style_metrics(stack):
    stack.start_api()
    port = stack.start_agent("node-b")
    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
    assert health["node"] == "node-b" and health["metrics_mode"] == "fake" and health["ok"]
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    util = families["DCGM_FI_DEV_GPU_UTIL"]
    assert {s.labels["gpu"] for s in util.samples} == {"0", "1"}
    assert {"UUID", "modelName", "Hostname"} <= set(util.samples[0].labels)


def test_drained_node_is_listed_as_draining_and_undrain_restores_it(stack):
    stack.start_api()
    stack.start_agent("node-a")
    assert requests.post(f"{stack.api}/api/nodes/node-a/drain", timeout=5).ok
    assert nodes(stack)["node-a"]["state"] == "draining"
    assert requests.post(f"{stack.api}/api/nodes/node-a/undrain", timeout=5).ok
    assert nodes(stack)["node-a"]["state"] == "online"
    assert requests.post(f"{stack.api}/api/nodes/nope/drain", timeout=5).status_code == 404


def test_real_mode_without_nvml_stops_the_agent_with_one_clear_line(stack, tmp_path):
    # Given no NVIDIA driver on this machine, an agent told to use real metrics
    env = {**stack.env, "NODE_NAME": "node-x", "GPU_METRICS_MODE": "real", "AGENT_PORT": "0"}
    result = subprocess.run(
        [str(BIN / "celery"), "-A", "workers.app", "worker", "-n", "node-x@%h", "-Q", "assign:node-x"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    # Then it exits non-zero, saying why and what to do
    assert result.returncode != 0
    assert "GPU_METRICS_MODE=real but NVML could not be loaded" in result.stderr + result.stdout
