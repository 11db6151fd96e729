"""The deploy files describe the stack of DESIGN.md, and every command names real code.

No Docker engine runs here, so the compose files are parsed, not run.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
GPU_COMPOSE = yaml.safe_load((ROOT / "deploy/docker-compose.gpu.yml").read_text())
PROCFILE = dict(
    line.split(": ", 1) for line in (ROOT / "deploy/Procfile").read_text().splitlines() if line.strip()
)


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else command


def assert_names_real_code(argv: list[str]) -> None:
    """`celery -A pkg.mod ...` and `gunicorn ... 'pkg.mod:factory()'` must import."""
    if argv[0] == "celery":
        importlib.import_module(argv[argv.index("-A") + 1])
    elif argv[0] == "gunicorn":
        module, _, factory = argv[-1].partition(":")
        assert callable(getattr(importlib.import_module(module), factory.rstrip("()")))
        config = argv[argv.index("-c") + 1]
        assert (ROOT / config).is_file(), config
    else:
        pytest.fail(f"unexpected program {argv[0]}")


def test_compose_runs_every_part_of_the_design():
    assert set(COMPOSE["services"]) == {
        "postgres", "redis", "api", "scheduler", "beat", "agent-a", "agent-b", "flower"
    }


@pytest.mark.parametrize(
    ("service", "port"),
    [("api", 8000), ("agent-a", 8001), ("agent-b", 8002), ("flower", 5555),
     ("postgres", 5432), ("redis", 6379)],
)
def test_compose_publishes_the_documented_ports(service, port):
    assert f"{port}:{port}" in COMPOSE["services"][service]["ports"]


def test_postgres_has_the_overlay_user_and_database():
    env = COMPOSE["services"]["postgres"]["environment"]
    assert env["POSTGRES_USER"] == "overlay" and env["POSTGRES_DB"] == "overlay"
    api_env = COMPOSE["services"]["api"]["environment"]
    assert "overlay:overlay@postgres:5432/overlay" in api_env["DATABASE_URL"]


@pytest.mark.parametrize("service", ["postgres", "redis", "api", "agent-a", "agent-b"])
def test_services_others_wait_for_have_healthchecks(service):
    assert COMPOSE["services"][service]["healthcheck"]["test"]


@pytest.mark.parametrize("name", ["api", "scheduler", "beat", "agent-a", "agent-b", "flower"])
def test_each_compose_command_names_a_real_module(name):
    assert_names_real_code(command_of(COMPOSE["services"][name]))


@pytest.mark.parametrize("name", sorted(PROCFILE))
def test_each_procfile_command_names_a_real_module(name):
    argv = shlex.split(PROCFILE[name])
    while argv[0] == "env" or "=" in argv[0]:
        argv = argv[1:]
    assert_names_real_code(argv)


@pytest.mark.parametrize(("node", "port"), [("node-a", "8001"), ("node-b", "8002")])
def test_agents_consume_their_own_queue_and_the_heartbeat(node, port):
    agent = COMPOSE["services"][f"agent-{node[-1]}"]
    argv = command_of(agent)
    assert argv[argv.index("-Q") + 1] == f"assign:{node},overlay.heartbeat"
    assert argv[argv.index("-n") + 1] == f"{node}@%h"
    assert agent["environment"]["NODE_NAME"] == node
    assert agent["environment"]["AGENT_PORT"] == port
    assert f"assign:{node},overlay.heartbeat" in PROCFILE[f"agent-{node[-1]}"]


def test_the_scheduler_consumes_jobs_queue_one_at_a_time():
    argv = command_of(COMPOSE["services"]["scheduler"])
    assert argv[argv.index("-Q") + 1] == "jobs:queue"
    assert argv[argv.index("-c") + 1] == "1"


@pytest.mark.parametrize("agent", ["agent-a", "agent-b"])
def test_the_gpu_overlay_requests_nvidia_devices_for_each_agent(agent):
    devices = GPU_COMPOSE["services"][agent]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def test_every_path_the_dockerfile_copies_exists():
    for line in (ROOT / "deploy/Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_the_makefile_has_the_readme_targets():
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"dev", "test", "up", "logs", "down", "migrate"} <= targets


def test_flower_takes_its_basic_auth_from_the_hosts_environment():
    from flower.options import options

    assert "basic-auth" in options._options  # what Flower reads FLOWER_BASIC_AUTH into
    env = COMPOSE["services"]["flower"]["environment"]
    # No value: compose passes the host's through, and leaves it unset when the host has none
    assert "FLOWER_BASIC_AUTH" in env and env["FLOWER_BASIC_AUTH"] is None


def test_the_prometheus_example_scrapes_the_api_and_both_agents():
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"localhost:8000", "localhost:8001", "localhost:8002"}
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
