"""What an agent executes: argv for the host or Apptainer, and an environment with exactly the job's GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlay.launch import image_uri, job_argv, job_env, log_path
from overlay.model import JobSpec

SPEC = JobSpec(job_id="j1", cmd=("python", "train.py"), env={"EPOCHS": "3"})


def test_without_an_image_the_argv_runs_on_the_host_as_given():
    assert job_argv(SPEC) == ["python", "train.py"]


@pytest.mark.parametrize(
    ("image", "uri"),
    [
        ("alpine", "docker://alpine"),
        ("nvcr.io/nvidia/pytorch:24.01-py3", "docker://nvcr.io/nvidia/pytorch:24.01-py3"),
        ("/images/torch.sif", "/images/torch.sif"),
        ("torch.sif", "torch.sif"),
        ("./sandbox", "./sandbox"),
        ("docker://ubuntu:22.04", "docker://ubuntu:22.04"),
        ("oras://ghcr.io/x/y:1", "oras://ghcr.io/x/y:1"),
    ],
)
def test_an_image_runs_through_apptainer_with_nv(image, uri):
    spec = JobSpec(job_id="j", cmd=("nvidia-smi",), image=image)
    assert image_uri(image) == uri
    assert job_argv(spec) == ["apptainer", "exec", "--nv", uri, "nvidia-smi"]


def test_the_job_sees_exactly_its_gpus_in_nvml_order():
    env = job_env(SPEC, (1, 3), agent_env={"PATH": "/usr/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["OVERLAY_JOB_ID"] == "j1"
    assert env["EPOCHS"] == "3"


def test_a_cpu_only_job_sees_no_gpu():
    assert job_env(SPEC, (), agent_env={})["CUDA_VISIBLE_DEVICES"] == ""


def test_nothing_secret_of_the_agents_reaches_the_job():
    agent_env = {"PATH": "/bin", "HOME": "/root", "DATABASE_URL": "postgresql://u:pw@h/db",
                 "OVERLAY_API_TOKEN": "t0k", "AWS_SECRET_ACCESS_KEY": "x"}
    env = job_env(SPEC, (0,), agent_env=agent_env)
    assert env["PATH"] == "/bin" and env["HOME"] == "/root"
    assert not {"DATABASE_URL", "OVERLAY_API_TOKEN", "AWS_SECRET_ACCESS_KEY"} & env.keys()


def test_the_log_path_stays_in_the_log_dir():
    assert log_path("/var/logs", "a.b-c_1") == Path("/var/logs/a.b-c_1.log")
