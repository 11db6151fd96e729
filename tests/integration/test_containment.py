"""A job is contained by its supervisor (workers/supervisor.py) in a cgroup of its own: what
it starts dies with it, its memory is limited, it opens only its own GPUs' device nodes
(through the devices cgroup, or masked in a mount namespace of its own), and its log is
capped. Real processes, the host's real cgroups and real mounts.

One two-node stack for the module, with fake GPU device nodes (``mknod``) in a DEVICE_DIR
of its own and a small LOG_MAX_BYTES (and a third node forced to GPU_ISOLATION=namespace
for the tests of masking). Each test says in its skip message exactly what the host lacks;
CI (root, cgroup v1) runs them all (``CI=true`` turns a skip into a failure).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from overlay.launch import LOG_TRUNCATED
from tests.integration.harness import (
    TERMINAL,
    Stack,
    alive,
    job,
    logs,
    nodes,
    shared_stack,
    submit,
    wait_state,
    wait_until,
)
from workers import cgroups, gpu_isolation

pytestmark = pytest.mark.slow
LOG_MAX_BYTES = 100_000
# Fake GPU device nodes: character devices whose drivers exist on every Linux host (so an
# allowed open succeeds), each a distinct device number (so denying one denies no other).
FAKE_GPU_DEVICES = {0: (1, 7), 1: (1, 8), 2: (1, 9), 3: (1, 11)}  # full, random, urandom, kmsg
FAKE_CONTROL_DEVICES = {"nvidiactl": (1, 5), "nvidia-uvm": (1, 3)}  # zero, null: open to every job


def skip_or_fail(why: str | None) -> None:
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the containment tests, but {why}")
        pytest.skip(why)


def why_no_cgroups() -> str | None:
    """What this host lacks for the containment tests, or None."""
    if os.geteuid() != 0:
        return "creating cgroups and device nodes needs root"
    kind = cgroups.detect()
    if kind == "none":
        return "no writable cgroup (neither cgroup2 with memory+pids nor cgroup v1 freezer/pids)"
    if kind == "cgroup1":
        missing = [c for c in ("memory", "devices") if c not in cgroups.v1_roots()]
        if missing:
            return f"cgroup v1 without a writable {' or '.join(missing)} controller"
    if kind == "cgroup2":
        return "GPU device isolation on cgroup2 (eBPF device programs) is not implemented"
    return None


@pytest.fixture(scope="module")
def contained(database_url, tmp_path_factory) -> Iterator[Stack]:
    skip_or_fail(why_no_cgroups())
    workdir = tmp_path_factory.mktemp("contained")
    devices = workdir / "dev"
    devices.mkdir()
    for index, (major, minor) in FAKE_GPU_DEVICES.items():
        os.mknod(devices / f"nvidia{index}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    for name, (major, minor) in FAKE_CONTROL_DEVICES.items():
        os.mknod(devices / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    yield from shared_stack(database_url, workdir, DEVICE_DIR=str(devices),
                            LOG_MAX_BYTES=str(LOG_MAX_BYTES))


def test_daemons_a_job_starts_die_with_it_when_it_exits_times_out_or_is_cancelled(contained, tmp_path):
    # Given three jobs that each start a daemon in a session of its own (setsid), then
    # exit at once, run past their timeout, or run until cancelled
    ends = {"exits": "exit 0", "times-out": "sleep 300", "cancelled": "sleep 300"}
    for name, end in ends.items():
        pidfile = tmp_path / f"{name}.pid"
        script = f"setsid sleep 300 & echo $! > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; {end}"
        submit(contained, job_id=f"daemon-{name}", timeout_s=3 if name == "times-out" else None,
               cmd=["sh", "-c", script])
    daemons = {name: int(wait_until(lambda n=name: (tmp_path / f"{n}.pid").is_file()
                                    and (tmp_path / f"{n}.pid").read_text().strip(),
                                    timeout=60, what=f"{name}'s daemon to start"))
               for name in ends}
    wait_state(contained, "daemon-cancelled", {"RUNNING"})
    requests.post(f"{contained.api}/api/jobs/daemon-cancelled/cancel", timeout=10).raise_for_status()
    expected = {"exits": ("DONE", None), "times-out": ("FAILED", "timeout"),
                "cancelled": ("CANCELLED", "cancelled by user")}
    for name, (state, reason) in expected.items():
        # When each job has ended
        ended = wait_state(contained, f"daemon-{name}", TERMINAL, timeout=60)
        assert (ended["state"], ended["reason"]) == (state, reason), ended
        # Then no process of it is left within 2 s, its escaped daemon included
        wait_until(lambda n=name: not alive(daemons[n]), timeout=2, what=f"{name}'s daemon to be gone")


def test_a_job_past_its_memory_limit_fails_out_of_memory(contained):
    # Given a job limited to 64 MiB
    submit(contained, job_id="greedy", memory_mb=64,
           cmd=["python3", "-c", "import time; x = bytearray(512 * 1024 * 1024); time.sleep(5)"])
    # When it allocates 512 MiB
    ended = wait_state(contained, "greedy", TERMINAL, timeout=60)
    # Then the kernel kills it and it fails, saying why
    assert (ended["state"], ended["reason"]) == ("FAILED", "out of memory (limit 64 MiB)"), ended
    assert job(contained, "greedy")["request"]["memory_mb"] == 64
    # (and a job within its limit runs as usual)
    submit(contained, job_id="modest", memory_mb=64,
           cmd=["python3", "-c", "x = bytearray(8 * 1024 * 1024); print('ok')"])
    assert wait_state(contained, "modest", TERMINAL, timeout=60)["state"] == "DONE"


def test_a_job_opens_only_its_own_gpus_device_nodes(contained):
    # Given node-a's GPU 0 held by another job, and fake /dev/nvidia0..3
    submit(contained, job_id="holds-gpu0", gpus=1, node_selector={"zone": "a"}, cmd=["sleep", "30"])
    assert wait_state(contained, "holds-gpu0", {"RUNNING"})["gpus"] == [0]
    devices = Path(contained.env["DEVICE_DIR"])
    probe = ("import sys\n"
             "for n in ['0', '1', '2', '3', 'ctl', '-uvm']:\n"
             "    try:\n"
             f"        open('{devices}/nvidia%s' % n, 'rb').close(); print('nvidia%s opens' % n)\n"
             "    except OSError as e:\n"
             "        print('nvidia%s %s' % (n, type(e).__name__))\n")
    # When a one-GPU job on node-a tries to open every GPU's device node
    submit(contained, job_id="gpu-probe", gpus=1, node_selector={"zone": "a"}, cmd=["python3", "-c", probe])
    ended = wait_state(contained, "gpu-probe", TERMINAL, timeout=60)
    requests.post(f"{contained.api}/api/jobs/holds-gpu0/cancel", timeout=10)
    # Then it got GPU 1, and only GPU 1's device node opens; the others are refused
    assert (ended["state"], ended["gpus"]) == ("DONE", [1]), ended
    output = logs(contained, "gpu-probe")
    assert nodes(contained)["node-a"]["agent_health"]["gpu_isolation"] == "devices"
    for opens in ("nvidia1", "nvidiactl", "nvidia-uvm"):
        assert f"{opens} opens" in output, output
    for other in (0, 2, 3):
        assert f"nvidia{other} PermissionError" in output, output


def test_a_job_writing_more_than_log_max_bytes_runs_on_and_its_log_ends_with_the_marker(contained):
    # Given a job that writes 3 × LOG_MAX_BYTES and then says it finished
    writer = (f"import sys\nsys.stdout.write('x' * {3 * LOG_MAX_BYTES})\nsys.stdout.flush()\n"
              "open('/dev/null', 'w').write('still running')\n")
    submit(contained, job_id="chatty", cmd=["python3", "-c", writer + "print('the end')"])
    # When it has ended
    ended = wait_state(contained, "chatty", TERMINAL, timeout=60)
    # Then it ran to its end (DONE), and its log stops at the cap with one marker line
    assert (ended["state"], ended["exit_code"]) == ("DONE", 0), ended
    response = requests.get(f"{contained.api}/api/jobs/chatty/logs", timeout=10)
    text = response.text
    assert text.rstrip("\n").splitlines()[-1].startswith(LOG_TRUNCATED), text[-300:]
    assert "the end" not in text
    assert LOG_MAX_BYTES <= len(response.content) <= LOG_MAX_BYTES + 200
    assert response.headers.get("X-Log-Truncated") == "true"


def test_a_job_sees_nothing_of_the_agents_environment(contained):
    # Given agents started with DATABASE_URL and REDIS_URL (the test stack's own)
    assert nodes(contained)["node-a"]["agent_health"]["containment"] == cgroups.detect()
    # When a job prints its environment and its parent's (its supervisor's)
    submit(contained, job_id="nosy", env={"MINE": "yes"},
           cmd=["sh", "-c", "env; echo ---; tr '\\0' '\\n' < /proc/$PPID/environ"])
    ended = wait_state(contained, "nosy", TERMINAL, timeout=60)
    output = logs(contained, "nosy")
    # Then it holds its own variables and overlay's, and no secret of the agent's anywhere
    assert ended["state"] == "DONE", output
    assert "MINE=yes" in output and "OVERLAY_JOB_ID=nosy" in output and "HOME=" in output
    for secret in ("DATABASE_URL", "REDIS_URL", "postgresql", "redis://"):
        assert secret not in output, output


def mounts_under(path: Path) -> list[str]:
    """This (the host's) mount table's lines that mount something under ``path``."""
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if f" {path}/" in line]


@pytest.fixture(scope="module")
def masking(contained) -> Stack:
    """A third node, zone c with 4 GPUs, whose agent is forced to GPU_ISOLATION=namespace
    (on this host auto takes the devices cgroup)."""
    why = gpu_isolation.why_no_namespace(os.environ)
    skip_or_fail(None if why is None else f"a job cannot get a mount namespace of its own here: {why}")
    contained.start_agent("node-c", fake_gpus="4xNVIDIA A100-SXM4-80GB:81920", labels="zone=c",
                          GPU_ISOLATION="namespace")
    return contained


def test_with_namespace_isolation_a_job_cannot_open_other_gpus_nodes_and_leaves_no_mount(masking, tmp_path):
    # Given node-c's GPU 0 held by another job, fake nvidia0..3, nvidiactl and nvidia-uvm
    devices = Path(masking.env["DEVICE_DIR"])
    assert nodes(masking)["node-c"]["agent_health"]["gpu_isolation"] == "namespace"
    assert mounts_under(devices) == []
    submit(masking, job_id="ns-holds-gpu0", gpus=1, node_selector={"zone": "c"}, cmd=["sleep", "60"])
    assert wait_state(masking, "ns-holds-gpu0", {"RUNNING"})["gpus"] == [0]
    ready, go, pidfile = tmp_path / "ready", tmp_path / "go", tmp_path / "daemon.pid"
    probe = ("import os, subprocess, time\n"
             "for n in ['0', '1', '2', '3', 'ctl', '-uvm']:\n"
             "    try:\n"
             f"        open('{devices}/nvidia%s' % n, 'rb').close(); print('nvidia%s opens' % n)\n"
             "    except OSError as e:\n"
             "        print('nvidia%s %s %s' % (n, type(e).__name__, e.strerror))\n"
             f"print('masks inside:', sum(' {devices}/' in l for l in open('/proc/self/mountinfo')))\n"
             "daemon = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
             f"open('{pidfile}.tmp', 'w').write(str(daemon.pid)); os.rename('{pidfile}.tmp', '{pidfile}')\n"
             f"open('{ready}', 'w').close()\n"
             f"while not os.path.exists('{go}'): time.sleep(0.05)\n")
    # When a one-GPU job on node-c (running as root: the test stack sets no JOB_USER) tries
    # to open every node, starts a daemon in a session of its own, and waits
    submit(masking, job_id="ns-probe", gpus=1, node_selector={"zone": "c"}, cmd=["python3", "-c", probe])
    wait_until(ready.exists, timeout=60, what="the probe job to have tried every node")
    # Then its masks are in its own mount namespace only: the host's mount table has none
    assert mounts_under(devices) == []
    go.touch()
    ended = wait_state(masking, "ns-probe", TERMINAL, timeout=60)
    requests.post(f"{masking.api}/api/jobs/ns-holds-gpu0/cancel", timeout=10)
    # and it got GPU 1: its own node and the control nodes open, the other GPUs' are refused
    output = logs(masking, "ns-probe")
    assert (ended["state"], ended["gpus"]) == ("DONE", [1]), (ended, output)
    for opens in ("nvidia1", "nvidiactl", "nvidia-uvm"):
        assert f"{opens} opens" in output, output
    for other in (0, 2, 3):
        assert f"nvidia{other} PermissionError Permission denied" in output, output
    assert "masks inside: 3" in output, output
    # and its daemon died with it, as on any node; no mount is left on the host
    daemon = int(pidfile.read_text())
    wait_until(lambda: not alive(daemon), timeout=2, what="the namespace job's daemon to be gone")
    assert mounts_under(devices) == []
