"""The deploy files describe the stack of DESIGN.md, and every command names real code.

Parsed here; tests/compose/ runs them on a real engine.
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
PROCFILE = dict(
    line.split(": ", 1) for line in (ROOT / "deploy/Procfile").read_text().splitlines()
    if line.strip() and not line.startswith("#")
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
    ("service", "port", "variable"),
    [("api", 8000, "OVERLAY_API_PORT"), ("agent-a", 8001, "OVERLAY_AGENT_A_PORT"),
     ("agent-b", 8002, "OVERLAY_AGENT_B_PORT"), ("flower", 5555, "OVERLAY_FLOWER_PORT")],
)
def test_compose_publishes_the_documented_ports(service, port, variable):
    # The seed's ports by default; movable, and bindable to one address, from the environment
    assert COMPOSE["services"][service]["ports"] == [
        "${OVERLAY_PUBLISH_ADDR:-0.0.0.0}:${" + variable + f":-{port}}}:{port}"
    ]


def test_postgres_has_the_overlay_user_and_database():
    env = COMPOSE["services"]["postgres"]["environment"]
    assert env["POSTGRES_USER"] == "overlay" and env["POSTGRES_DB"] == "overlay"
    api_env = COMPOSE["services"]["api"]["environment"]
    assert api_env["DATABASE_URL"].startswith("postgresql+psycopg2://overlay:${POSTGRES_PASSWORD:?")
    assert api_env["DATABASE_URL"].endswith("}@postgres:5432/overlay")


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


def test_every_path_the_dockerfile_copies_exists():
    for line in (ROOT / "deploy/Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_the_makefile_has_the_readme_targets():
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"dev", "test", "up", "logs", "down", "migrate"} <= targets


def test_flower_requires_the_basic_auth_make_up_generates():
    from flower.options import options

    assert "basic-auth" in options._options  # what Flower reads FLOWER_BASIC_AUTH into
    env = COMPOSE["services"]["flower"]["environment"]
    assert env["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_one_service_builds_the_image_the_others_run():
    services = COMPOSE["services"]
    overlay = [name for name, service in services.items() if service.get("image") == "overlay:dev"]
    assert sorted(overlay) == sorted(["api", "scheduler", "beat", "agent-a", "agent-b", "flower"])
    assert [name for name in overlay if "build" in services[name]] == ["api"]
    assert all(services[name]["pull_policy"] == "never" for name in overlay if name != "api")


def test_the_prometheus_example_scrapes_the_api_and_both_agents():
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"localhost:8000", "localhost:8001", "localhost:8002"}
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
