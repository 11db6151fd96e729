"""The deployed stack is closed: generated secrets, stores on the compose network only,
tokens in the API alone, and none of it in the image. Parsed here; tests/compose/
checks the same on a running stack."""

from __future__ import annotations

import importlib.util
import re
import stat
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OVERLAY_SERVICES = ["api", "scheduler", "beat", "agent-a", "agent-b", "flower"]


def load(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


stack_env = load("deploy/stack_env.py")


def required(variable: str) -> str:
    """How compose says `variable` must be set: ${VAR:?message}."""
    return "${" + variable + ":?"


@pytest.mark.parametrize("token", ["OVERLAY_API_TOKEN", "OVERLAY_ADMIN_TOKEN"])
def test_only_the_api_holds_the_tokens_and_compose_requires_them(token):
    assert SERVICES["api"]["environment"][token].startswith(required(token))
    # A job can read its agent's environment; no other service needs the tokens
    holders = [name for name, service in SERVICES.items() if token in str(service.get("environment", {}))]
    assert holders == ["api"]


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_the_database_and_broker_publish_no_port(service):
    assert "ports" not in SERVICES[service]


@pytest.mark.parametrize("service", OVERLAY_SERVICES)
def test_every_service_reaches_the_stores_with_their_generated_passwords(service):
    env = SERVICES[service]["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+psycopg2://overlay:" + required("POSTGRES_PASSWORD"))
    assert env["REDIS_URL"].startswith("redis://:" + required("REDIS_PASSWORD"))
    assert env["REDIS_URL"].endswith("}@redis:6379/0")


def test_postgres_and_redis_take_their_passwords_from_deploy_env():
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(required("POSTGRES_PASSWORD"))
    command = SERVICES["redis"]["command"]
    assert command[:2] == ["redis-server", "--requirepass"]
    assert command[2].startswith(required("REDIS_PASSWORD"))
    # redis-cli logs in with it, so the healthcheck and the seed's `exec redis redis-cli` work
    assert SERVICES["redis"]["environment"]["REDISCLI_AUTH"].startswith(required("REDIS_PASSWORD"))


def test_flower_requires_its_generated_login():
    assert SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith(required("FLOWER_BASIC_AUTH"))


def test_stack_env_writes_every_secret_once_readable_by_its_owner_only(tmp_path):
    # Given no deploy/.env
    path = tmp_path / ".env"
    # When make up writes it, twice
    assert stack_env.main(["stack_env.py", str(path)]) == 0
    first = path.read_text()
    assert stack_env.main(["stack_env.py", str(path)]) == 0
    # Then it holds every secret, each different, unchanged by the second run, mode 0600
    values = stack_env.read_env(path)
    assert set(values) == set(stack_env.SECRETS)
    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = [values[key] for key in values if key != "FLOWER_BASIC_AUTH"]
    assert len(set(secrets)) == len(secrets) and all(len(s) >= 40 for s in secrets)
    user, _, password = values["FLOWER_BASIC_AUTH"].partition(":")
    assert user == "overlay" and len(password) >= 40
    # URL-safe: they go into DATABASE_URL and REDIS_URL as they are
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", s) for s in secrets)


def test_stack_env_adds_what_an_older_file_lacks_and_keeps_its_tokens(tmp_path, capsys):
    # Given a deploy/.env from before the stores had passwords
    path = tmp_path / ".env"
    path.write_text("OVERLAY_API_TOKEN=old-api\nOVERLAY_ADMIN_TOKEN=old-admin\n")
    # When make up runs
    stack_env.main(["stack_env.py", str(path)])
    # Then the tokens stay, the new secrets are added, and it says how to reset the old volume
    values = stack_env.read_env(path)
    assert values["OVERLAY_API_TOKEN"] == "old-api" and values["OVERLAY_ADMIN_TOKEN"] == "old-admin"
    assert {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"} <= set(values)
    assert "overlay_pgdata" in capsys.readouterr().out


def test_make_up_writes_the_secrets_and_git_ignores_them():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up: deploy/\.env\b", makefile, re.M)
    assert re.search(r"^deploy/\.env:\n\t@\$\(PYTHON\) deploy/stack_env\.py \$@$", makefile, re.M)
    assert "--env-file deploy/.env" in makefile
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("kept_out", [".env", ".venv", "var/", ".git", "bench/results/"])
def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context(kept_out):
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line and not line.startswith("#")]
    wanted = {".env": "**/.env"}.get(kept_out, kept_out)
    assert wanted in patterns


def test_local_services_leaves_the_hosts_pg_hba_alone():
    script = (ROOT / "deploy/local-services.sh").read_text()
    # Only comments and messages name pg_hba.conf; nothing writes a trust rule
    code = [line for line in script.splitlines() if not line.lstrip().startswith(("#", "say "))]
    assert not [line for line in code if "hba" in line or "trust" in line]
