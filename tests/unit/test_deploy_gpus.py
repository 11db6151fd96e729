"""On a GPU host `make up` gives each agent GPUs of its own (deploy/gpu_split.py).

A fake `nvidia-smi` on PATH stands in for the host's; what make writes is the compose
override the agents run with.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ["agent-a", "agent-b"]


def fake_nvidia_smi(folder: Path, count: int) -> dict[str, str]:
    """An environment whose PATH starts with an `nvidia-smi -L` listing `count` H100s."""
    lines = "\n".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d}-aaaa-bbbb-cccc-000000000000)"
                      for i in range(count))
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 9\ncat <<'END'\n{lines}\nEND\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def make(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)


def agent_devices(override: dict, agent: str) -> list[str]:
    service = override["services"][agent]
    if "deploy" not in service:
        return []
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and "count" not in device
    return device["device_ids"]


def test_make_up_splits_eight_gpus_between_the_agents_with_none_shared(tmp_path):
    # Given a host whose nvidia-smi lists 8 GPUs
    env = fake_nvidia_smi(tmp_path, 8)
    override_path = tmp_path / "gpu.yml"
    # When make writes the GPU override
    made = make(env, f"GPU_OVERRIDE={override_path}", str(override_path))
    override = yaml.safe_load(override_path.read_text())
    # Then each agent owns four GPUs, no GPU has two owners, and every GPU has one
    shares = {agent: agent_devices(override, agent) for agent in AGENTS}
    assert shares == {"agent-a": ["0", "1", "2", "3"], "agent-b": ["4", "5", "6", "7"]}
    assert "agent-a: 0,1,2,3; agent-b: 4,5,6,7" in made.stderr
    for agent in AGENTS:
        assert override["services"][agent]["environment"]["GPU_METRICS_MODE"] == "${GPU_METRICS_MODE:-real}"


def test_make_up_passes_the_override_to_compose_only_on_a_gpu_host(tmp_path):
    override_path = tmp_path / "gpu.yml"
    with_gpus = make(fake_nvidia_smi(tmp_path, 8), "-n", f"GPU_OVERRIDE={override_path}", "up").stdout
    assert f"gpu_split.py agent-a agent-b > {override_path}" in with_gpus
    assert f"-f deploy/docker-compose.yml -f {override_path} up --build -d" in with_gpus
    no_gpu = {**os.environ, "PATH": ":".join(p for p in os.environ["PATH"].split(":")
                                             if not (Path(p) / "nvidia-smi").exists())}
    without = make(no_gpu, "-n", f"GPU_OVERRIDE={override_path}", "up").stdout
    assert "gpu_split.py" not in without and "-f deploy/docker-compose.yml up --build -d" in without


@pytest.mark.parametrize(("count", "a", "b"), [(1, ["0"], []), (3, ["0", "1"], ["2"]), (2, ["0"], ["1"])])
def test_small_and_odd_hosts_split_with_none_shared_and_an_agent_without_gpus_not_started(
    tmp_path, count, a, b
):
    override_path = tmp_path / "gpu.yml"
    make(fake_nvidia_smi(tmp_path, count), f"GPU_OVERRIDE={override_path}", str(override_path))
    override = yaml.safe_load(override_path.read_text())
    assert agent_devices(override, "agent-a") == a and agent_devices(override, "agent-b") == b
    assert ("profiles" in override["services"]["agent-b"]) == (not b)


def test_mig_lines_are_not_counted_as_gpus():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_split", ROOT / "deploy/gpu_split.py")
    assert spec and spec.loader
    gpu_split = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_split)
    listing = ("GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1)\n"
               "  MIG 1g.5gb      Device  0: (UUID: MIG-2)\n"
               "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-3)\n")
    assert gpu_split.list_gpus(listing) == [("0", "NVIDIA A100-SXM4-40GB"), ("1", "NVIDIA A100-SXM4-40GB")]
