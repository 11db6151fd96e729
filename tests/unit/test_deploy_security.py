"""The deployed stack is not open: compose requires both API tokens, `make up` makes them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())


@pytest.mark.parametrize("service", ["api", "scheduler", "beat", "agent-a", "agent-b"])
@pytest.mark.parametrize("token", ["OVERLAY_API_TOKEN", "OVERLAY_ADMIN_TOKEN"])
def test_compose_requires_both_tokens_from_the_environment(service, token):
    # ${VAR:?message}: compose refuses to start without it instead of running an open API
    value = COMPOSE["services"][service]["environment"][token]
    assert value.startswith("${" + token + ":?") and value.endswith("}"), value


def test_make_up_writes_random_tokens_once_and_git_ignores_them():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up: deploy/\.env$", makefile, re.M)
    assert "--env-file deploy/.env" in makefile and "secrets.token_urlsafe" in makefile
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().split()
