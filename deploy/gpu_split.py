"""Splits a GPU host's GPUs between the compose stack's agents, so no GPU has two owners.

`make up` runs it on a host where `nvidia-smi -L` works and passes what it prints to
compose as an override (var/docker-compose.gpu.yml): `python3 deploy/gpu_split.py
agent-a agent-b`. Each agent gets a contiguous share of the GPU indices (shares differ
by at most one, the first agents get the extra) as its `device_ids`, so node-a and
node-b never report, nor are given jobs on, the same physical GPU. An agent left with
no GPU (a one-GPU host) is not started. Standard library only: it runs on the host.
"""

from __future__ import annotations

import re
import subprocess
import sys

GPU_LINE = re.compile(r"^GPU (\d+): (.*?)(?: \(UUID: [^)]*\))?$")


def list_gpus(listing: str) -> list[tuple[str, str]]:
    """(index, model) of each GPU in `nvidia-smi -L` output; MIG lines are skipped."""
    found = (GPU_LINE.match(line.strip()) for line in listing.splitlines())
    return [(m.group(1), m.group(2)) for m in found if m]


def split(gpus: list[str], agents: list[str]) -> dict[str, list[str]]:
    """Each agent's GPUs: contiguous shares that cover every GPU once."""
    base, extra = divmod(len(gpus), len(agents))
    shares, start = {}, 0
    for i, agent in enumerate(agents):
        size = base + (1 if i < extra else 0)
        shares[agent] = gpus[start:start + size]
        start += size
    return shares


def agent_override(ids: list[str], models: dict[str, str]) -> list[str]:
    """The override's lines for one agent that owns `ids`."""
    if not ids:
        return ["    profiles: [no-gpu-left]   # not started: every GPU went to another agent"]
    quoted = ", ".join(f'"{i}"' for i in ids)
    return [
        f"    # {', '.join(f'GPU {i} ({models[i]})' for i in ids)}",
        "    environment:",
        "      NVIDIA_DRIVER_CAPABILITIES: compute,utility",
        "      GPU_METRICS_MODE: ${GPU_METRICS_MODE:-real}",
        "    deploy:",
        "      resources:",
        "        reservations:",
        "          devices:",
        f"            - {{driver: nvidia, device_ids: [{quoted}], capabilities: [gpu]}}",
    ]


def render(shares: dict[str, list[str]], models: dict[str, str]) -> str:
    """A compose override giving each agent its share (needs the NVIDIA Container Toolkit)."""
    lines = ["# Written by deploy/gpu_split.py for `make up`: each agent owns the GPUs listed.",
             "services:"]
    for agent, ids in shares.items():
        lines += [f"  {agent}:", *agent_override(ids, models)]
    return "\n".join(lines) + "\n"


def main(agents: list[str]) -> int:
    if not agents:
        print("usage: gpu_split.py AGENT...", file=sys.stderr)
        return 2
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    gpus = list_gpus(listing)
    models = dict(gpus)
    shares = split([index for index, _ in gpus], agents)
    sys.stdout.write(render(shares, models))
    owned = "; ".join(f"{agent}: {','.join(ids) or 'none (not started)'}" for agent, ids in shares.items())
    print(f"GPUs per agent: {owned}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
