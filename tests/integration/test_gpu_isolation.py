"""What an agent chooses to keep its jobs to their GPUs' device nodes (GPU_ISOLATION), on
this host and, with the host's facts replaced, on hosts that lack a mechanism; and the
mount namespace probe, run for real (as root, and without CAP_SYS_ADMIN)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from overlay.errors import ConfigError
from tests.integration.harness import ROOT
from workers import gpu_isolation, supervision


def require(why: str | None) -> None:
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run this test, but {why}")
        pytest.skip(why)


def test_as_root_a_job_can_have_a_mount_namespace():
    require(None if os.geteuid() == 0 else "the probe succeeds only as root")
    assert gpu_isolation.why_no_namespace(os.environ) is None


def test_without_cap_sys_admin_the_probe_says_why():
    require(None if shutil.which("setpriv") else "no setpriv (util-linux) to drop CAP_SYS_ADMIN")
    # Given a process that cannot get CAP_SYS_ADMIN back (dropped from its bounding set)
    probe = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", sys.executable, "-m",
                            "workers.gpu_isolation"], cwd=ROOT, capture_output=True, text=True)
    # Then the probe fails, naming the step and what it needs
    assert probe.returncode == 1
    assert probe.stderr.strip() == ("unshare(CLONE_NEWNS): Operation not permitted "
                                    "(mount namespaces need root or CAP_SYS_ADMIN)")


@pytest.fixture
def host(monkeypatch):
    """Replace what this host has: ``host(devices=..., namespace_error=...)``."""
    def set_facts(*, devices: bool, namespace_error: str | None) -> None:
        monkeypatch.setattr(gpu_isolation, "devices_cgroup", lambda: devices)
        monkeypatch.setattr(gpu_isolation, "why_no_namespace", lambda env: namespace_error)
    return set_facts


def test_on_a_cgroup2_host_auto_masks_in_a_namespace_and_devices_stops_the_agent(host):
    host(devices=False, namespace_error=None)
    assert supervision.choose_gpu_isolation("auto") == "namespace"
    with pytest.raises(ConfigError) as refused:
        supervision.choose_gpu_isolation("devices")
    assert refused.value.message == ("GPU_ISOLATION=devices, but this host has no writable cgroup v1 "
                                     "devices controller (on cgroup2 use namespace)")


def test_without_either_auto_warns_once_and_namespace_stops_the_agent(host, caplog):
    host(devices=False, namespace_error="unshare(CLONE_NEWNS): Operation not permitted")
    with caplog.at_level(logging.WARNING, logger="workers.supervision"):
        assert supervision.choose_gpu_isolation("auto") == "none"
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "GPU device isolation is not enforced here" in warning
    assert "unshare(CLONE_NEWNS): Operation not permitted" in warning
    with pytest.raises(ConfigError) as refused:
        supervision.choose_gpu_isolation("namespace")
    assert refused.value.message == ("GPU_ISOLATION=namespace, but a job here cannot have a mount "
                                     "namespace of its own: unshare(CLONE_NEWNS): Operation not permitted")


def test_none_is_none_even_where_both_are_there(host):
    host(devices=True, namespace_error=None)
    assert supervision.choose_gpu_isolation("none") == "none"
    assert supervision.choose_gpu_isolation("auto") == "devices"
