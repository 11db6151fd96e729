"""What to execute for a job: the argv (host or Apptainer) and the environment. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from overlay.gang import Rendezvous, rendezvous_env
from overlay.model import JobSpec

# Only these of the agent's own variables reach a job: nothing secret of the agent's
# (tokens, database URLs) may leak into user code.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OVERLAY_JOB_ID",
                          "OVERLAY_ARRAY_ID", "OVERLAY_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID",
                          "OVERLAY_PREEMPT_FILE"})
# How a capped log's marker line begins (the API reports ``truncated`` when the log ends with it).
LOG_TRUNCATED = "=== overlay: log truncated"
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://")


def image_uri(image: str) -> str:
    """A bare registry name (``alpine``, ``nvcr.io/nvidia/pytorch:24.01-py3``) becomes
    ``docker://...``; a path (``.sif`` file or sandbox folder) or a URI stays as given."""
    if _URI.match(image) or image.startswith(("/", "./", "../", "~")) or image.endswith(".sif"):
        return image
    return f"docker://{image}"


def job_argv(spec: JobSpec, *, apptainer: str = "apptainer") -> list[str]:
    """The argv to exec, never through a shell."""
    if not spec.image:
        return list(spec.cmd)
    return [apptainer, "exec", "--nv", image_uri(spec.image), *spec.cmd]


def job_env(
    spec: JobSpec, gpus: tuple[int, ...], *, agent_env: Mapping[str, str], attempt: int = 1,
    rendezvous: Rendezvous | None = None,
) -> dict[str, str]:
    """The job's environment: a few harmless agent variables, the job's own, its GPUs, and
    for a part of a gang job where its parts meet (``overlay.gang.rendezvous_env``).

    ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` makes CUDA number GPUs as NVML does, so the
    indices placement chose are the devices the job sees.
    """
    env = {k: agent_env[k] for k in INHERITED_ENV if k in agent_env}
    env.update(spec.env)
    visible = ",".join(str(i) for i in gpus)
    env.update(
        CUDA_VISIBLE_DEVICES=visible,
        CUDA_DEVICE_ORDER="PCI_BUS_ID",
        OVERLAY_JOB_ID=spec.job_id,
        OVERLAY_ATTEMPT=str(attempt),
    )
    if spec.array_id is not None:
        # SLURM_ARRAY_TASK_ID too, so a script written for Slurm's arrays runs unchanged.
        index = str(spec.array_index)
        env.update(OVERLAY_ARRAY_ID=spec.array_id, OVERLAY_ARRAY_INDEX=index, SLURM_ARRAY_TASK_ID=index)
    if rendezvous is not None:
        env.update(rendezvous_env(spec, rendezvous))
    if spec.image:
        # Apptainer passes the host env through, but say it explicitly for --cleanenv setups.
        env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] = visible
    return env


def log_path(log_dir: str, job_id: str, part: int = 0) -> Path:
    """Where a job's output goes (``<job_id>.part<K>.log`` for part K > 0 of a gang job).
    job_id is limited to [A-Za-z0-9._-] and never only dots, so the path cannot leave ``log_dir``."""
    return Path(log_dir) / (f"{job_id}.part{part}.log" if part else f"{job_id}.log")


def log_truncated_marker(max_bytes: int) -> str:
    """The line that ends a log whose job wrote more than LOG_MAX_BYTES."""
    return f"\n{LOG_TRUNCATED} at LOG_MAX_BYTES={max_bytes}; the job's further output was dropped ===\n"
