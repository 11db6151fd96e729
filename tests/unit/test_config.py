"""Settings come from the environment with defaults that work on localhost."""

from __future__ import annotations

import pytest

from overlay.config import Settings, parse_labels
from overlay.errors import ConfigError


def test_defaults_point_at_the_local_services():
    s = Settings.from_env({})
    assert s.database_url == "postgresql+psycopg2://postgres@127.0.0.1:5432/overlay"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.gpu_metrics_mode, s.node_ttl_s, s.heartbeat_interval_s) == ("auto", 15.0, 5.0)


def test_values_are_read_and_converted():
    s = Settings.from_env({"AGENT_PORT": "8002", "NODE_TTL_S": "7.5", "NODE_LABELS": "zone=a, tier=prod"})
    assert (s.agent_port, s.node_ttl_s) == (8002, 7.5)
    assert s.node_labels == {"zone": "a", "tier": "prod"}


@pytest.mark.parametrize(
    ("env", "named"),
    [({"AGENT_PORT": "eighty"}, "AGENT_PORT"), ({"GPU_METRICS_MODE": "gpu"}, "GPU_METRICS_MODE"),
     ({"NODE_LABELS": "zone"}, "NODE_LABELS"), ({"NODE_TTL_S": "0"}, "NODE_TTL_S"),
     ({"EXECUTOR": "docker"}, "EXECUTOR"), ({"GPU_ISOLATION": "ebpf"}, "GPU_ISOLATION"),
     ({"SUPERVISOR_LAUNCHER": "spawn"}, "SUPERVISOR_LAUNCHER")],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(env, named):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert named in caught.value.message


def test_empty_labels_are_no_labels():
    assert parse_labels("") == {}
