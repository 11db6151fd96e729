"""Checks overlay against real NVIDIA hardware: NVML readings, DCGM-style metrics, a CUDA job.

Run on a GPU host from the repository root: ``python deploy/gpu_check.py``. It needs
only the venv (no Postgres or Redis): it opens the real NVML probe, prints what an
agent would report to /api/nodes and serve on /metrics, then runs one job through
the agent's runner with CUDA_VISIBLE_DEVICES set to GPU 0 and prints its output.
Exits non-zero if NVML cannot be loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overlay.errors import GpuProbeError
from overlay.gpus import open_probe
from overlay.launch import job_env
from overlay.model import JobSpec
from workers.gpu_metrics import render_metrics
from workers.heartbeat import node_labels
from workers.runner import run, tail

CUDA_PROBE = (
    "import ctypes,os;c=ctypes.CDLL('libcuda.so.1');n=ctypes.c_int();"
    "print('cuInit', c.cuInit(0));print('cuDeviceGetCount', c.cuDeviceGetCount(ctypes.byref(n)), n.value);"
    "print('CUDA_VISIBLE_DEVICES', os.environ['CUDA_VISIBLE_DEVICES'])"
)


def main() -> int:
    try:
        probe = open_probe("real", node_name="gpu-check")
    except GpuProbeError as e:
        print(e.message)
        return 1
    report = probe.sample({0: "gpu-check-job"})
    print("== what /api/nodes would show ==")
    print(json.dumps({
        "labels": node_labels({}, report),
        "agent_health": {"metrics_mode": report.mode, "driver_version": report.driver_version,
                         "cuda_version": report.cuda_version, "probe_errors": list(report.errors)},
        "gpus": [asdict(g) for g in report.gpus],
    }, indent=2))
    print("== agent /metrics ==")
    print(render_metrics(report, hostname=socket.gethostname(), node="gpu-check",
                         busy={0: "gpu-check-job"}).decode())
    print("== a job on GPU 0 ==")
    argv = ["nvidia-smi", "-L"] if shutil.which("nvidia-smi") else [sys.executable, "-c", CUDA_PROBE]
    spec = JobSpec(job_id="gpu-check-job", cmd=tuple(argv))
    log = Path(tempfile.mkdtemp()) / "gpu-check-job.log"
    outcome = run(argv, job_env(spec, (0,), agent_env=os.environ), log_path=log, timeout_s=60,
                  should_stop=lambda: None)
    print(tail(log), f"exit={outcome.exit_code} reason={outcome.reason}")
    probe.close()
    return 0 if outcome.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
