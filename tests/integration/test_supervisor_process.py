"""The job supervisor alone (``python -m workers.supervisor <attempt dir>``), no agent: exit
codes, a missing program, timeout, cancel and a job's leftovers, each ending with nothing of
the job alive. Real processes in the host's real containment (cgroup v1 here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import ROOT, alive, wait_until
from workers import supervisor

PATH = {"PATH": "/usr/bin:/bin"}


def spec(tmp_path: Path, argv: list[str], **extra: Any) -> dict[str, Any]:
    return {"job_id": "j", "attempt": 1, "argv": argv, "env": PATH, "user": None,
            "log_path": str(tmp_path / "j.log"), "log_max_bytes": 0, "log_marker": "", "header": "",
            "timeout_s": None, "memory_mb": 0, "gpus": [], "device_dir": "/dev", "fence_s": 60, **extra}


def attempt_dir(tmp_path: Path, job: dict[str, Any]) -> Path:
    directory = tmp_path / "attempt"
    directory.mkdir()
    (directory / "spec.json").write_text(json.dumps(job))
    (directory / "lease").touch()
    return directory


def start(directory: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workers.supervisor", str(directory)], cwd=ROOT,
                            start_new_session=True)


def supervise(tmp_path: Path, argv: list[str], **extra: Any) -> dict[str, Any]:
    """Run the supervisor on ``argv`` to its end; its recorded outcome."""
    directory = attempt_dir(tmp_path, spec(tmp_path, argv, **extra))
    assert start(directory).wait(timeout=60) == 0
    return json.loads((directory / "outcome.json").read_text())  # type: ignore[no-any-return]


def test_exit_zero_is_a_clean_outcome_and_output_goes_to_the_log(tmp_path):
    outcome = supervise(tmp_path, ["sh", "-c", "echo out; echo err >&2"])
    assert (outcome["exit_code"], outcome["reason"]) == (0, None)
    assert (tmp_path / "j.log").read_text() == "out\nerr\n"


def test_a_non_zero_exit_names_its_code(tmp_path):
    outcome = supervise(tmp_path, ["sh", "-c", "exit 7"])
    assert (outcome["exit_code"], outcome["reason"]) == (7, "exit code 7")


def test_a_program_that_does_not_exist_fails_to_start_saying_so(tmp_path):
    outcome = supervise(tmp_path, ["no-such-program-xyz"])
    assert outcome["exit_code"] is None and "cannot start 'no-such-program-xyz'" in outcome["reason"]
    assert "cannot start" in (tmp_path / "j.log").read_text()


def test_a_timeout_kills_the_job_including_background_children(tmp_path):
    pidfile = tmp_path / "bg.pid"
    outcome = supervise(tmp_path, ["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout_s=1)
    assert outcome["reason"] == "timeout"
    assert not alive(int(pidfile.read_text()))


def test_a_cancel_file_kills_the_job_and_is_a_cancel(tmp_path):
    # Given a supervised job that would run for 30 s
    directory = attempt_dir(tmp_path, spec(tmp_path, ["sleep", "30"]))
    proc = start(directory)
    wait_until(lambda: (directory / "supervisor").exists(), timeout=10, what="the supervisor to start")
    # When the agent writes the cancel file
    (directory / "cancel").write_text("job is CANCELLED")
    # Then the supervisor kills it and records a cancel, with the agent's reason
    assert proc.wait(timeout=30) == 0
    outcome = json.loads((directory / "outcome.json").read_text())
    assert outcome["cancelled"] and outcome["reason"] == "job is CANCELLED"


def test_daemons_left_behind_die_when_the_job_exits(tmp_path):
    pidfile = tmp_path / "bg.pid"
    outcome = supervise(tmp_path, ["sh", "-c", f"setsid sleep 30 & echo $! > {pidfile}"])
    assert outcome["exit_code"] == 0
    assert not alive(int(pidfile.read_text()))


def test_a_lease_not_renewed_for_fence_s_fences_the_job(tmp_path):
    outcome = supervise(tmp_path, ["sleep", "30"], fence_s=0.5)
    assert outcome["fenced"] and outcome["reason"].startswith("fenced: the agent did not renew its lease")


def test_without_pidfds_exits_and_timeouts_still_work(tmp_path, monkeypatch):
    # Given a kernel (or platform) without pidfd_open (run in this process to patch it)
    def unsupported(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", unsupported)
    for name, argv, timeout_s, expected in (("exit", ["sh", "-c", "exit 3"], None, "exit code 3"),
                                            ("slow", ["sleep", "30"], 1, "timeout")):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "lease").touch()
        job = spec(directory, argv, timeout_s=timeout_s, job_id=f"nopidfd-{name}-{os.getpid()}")
        assert supervisor.run(directory, job)["reason"] == expected


def test_a_gpu_node_that_cannot_be_masked_fails_the_job_before_it_runs_naming_why(tmp_path):
    # Given namespace isolation and a device folder whose nvidia0 cannot be masked (a
    # dangling symlink: there is nothing to bind-mount over)
    if os.geteuid() != 0:
        why = "mount namespaces and bind mounts need root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run this test, but {why}")
        pytest.skip(why)
    devices = tmp_path / "dev"
    devices.mkdir()
    (devices / "nvidia0").symlink_to(tmp_path / "absent")
    # When a job with GPU 1 is started
    ran = tmp_path / "ran"
    outcome = supervise(tmp_path, ["touch", str(ran)], gpus=[1], device_dir=str(devices),
                        gpu_isolation="namespace")
    # Then it fails closed, before exec, saying which node and why (not Popen's "Exception
    # occurred in preexec_fn")
    assert not ran.exists()
    assert outcome["exit_code"] is None
    assert outcome["reason"] == (f"cannot start 'touch': [Errno 2] bind-mount {devices}/nvidia0: "
                                 "No such file or directory")


def test_the_supervisor_loads_no_celery_sqlalchemy_flask_or_redis():
    # What keeps one process per running job small (.importlinter checks the imports;
    # this checks what is actually loaded, indirect imports included)
    imported = subprocess.run([sys.executable, "-c", "import sys, workers.supervisor; "
                               "print(sorted(m for m in ('celery', 'sqlalchemy', 'flask', 'kombu', 'redis') "
                               "if m in sys.modules))"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"
