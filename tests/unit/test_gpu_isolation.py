"""Which mechanism keeps a job to its own GPUs' device nodes, and which nodes it masks
(workers/gpu_isolation.py); the masking itself runs in tests/integration/test_containment.py."""

from __future__ import annotations

import pytest

from overlay.config import GPU_ISOLATIONS, Settings
from workers.gpu_isolation import SETTINGS, choose, masked_nodes


@pytest.mark.parametrize(
    ("devices_cgroup", "namespace", "chosen"),
    [(True, True, "devices"), (True, False, "devices"), (False, True, "namespace"), (False, False, "none")],
)
def test_auto_takes_the_devices_cgroup_else_the_namespace_else_none(devices_cgroup, namespace, chosen):
    assert choose("auto", devices_cgroup=devices_cgroup, namespace=namespace) == chosen


def test_a_forced_mechanism_is_used_even_where_another_is_there():
    assert choose("namespace", devices_cgroup=True, namespace=True) == "namespace"
    assert choose("devices", devices_cgroup=True, namespace=True) == "devices"
    assert choose("none", devices_cgroup=True, namespace=True) == "none"


def test_a_forced_mechanism_the_host_lacks_is_no_choice():
    # (the agent then refuses to start, naming what the host lacks)
    assert choose("devices", devices_cgroup=False, namespace=True) is None
    assert choose("namespace", devices_cgroup=True, namespace=False) is None
    assert choose("none", devices_cgroup=False, namespace=False) == "none"


def test_the_setting_takes_exactly_the_values_the_supervisor_knows():
    assert GPU_ISOLATIONS == SETTINGS
    assert Settings.from_env({}).gpu_isolation == "auto"


def test_every_other_gpus_node_is_masked_and_nothing_else(tmp_path):
    # Given a device folder with nvidia0..3 and the shared control nodes
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (tmp_path / name).touch()
    # Then a job with GPUs 1 and 3 masks nvidia0 and nvidia2 only; a job with none masks every GPU
    assert masked_nodes(str(tmp_path), (1, 3)) == [str(tmp_path / "nvidia0"), str(tmp_path / "nvidia2")]
    assert masked_nodes(str(tmp_path), ()) == [str(tmp_path / f"nvidia{i}") for i in range(4)]
    assert masked_nodes(str(tmp_path / "absent"), ()) == []
