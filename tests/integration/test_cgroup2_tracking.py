"""The cgroup2 path of the job's containment, on this host's real cgroup2 hierarchy.

CI's machine is cgroup v1 hybrid: its jobs get v1 groups, and its cgroup2 mount
(/sys/fs/cgroup/unified) has no memory or pids controller, so ``cgroups.detect()`` never
picks cgroup2 there. Process tracking and the kill need no controller, though: this test
makes a v2 group with ``workers/cgroups.py``'s own ``_open_v2`` on whatever cgroup2 mount
the host has, puts a job with an escaping daemon in it, and kills the group, as the
supervisor does on a cgroup2 host. CI (root, a cgroup2 mount) runs it (``CI=true`` turns a
skip into a failure)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness import alive, wait_until
from workers import cgroups

pytestmark = pytest.mark.slow


def cgroup2_parent() -> Path | None:
    """This process's own directory in a writable cgroup2 hierarchy, or None."""
    for mount in (cgroups.CGROUP_ROOT, cgroups.CGROUP_ROOT / "unified"):
        if (mount / "cgroup.controllers").is_file():
            parent = mount / cgroups._own_path("")
            if os.geteuid() == 0 and parent.is_dir() and os.access(parent, os.W_OK):
                return parent
    return None


@pytest.fixture
def v2_group() -> cgroups.Group:
    parent = cgroup2_parent()
    if parent is None:
        why = "no cgroup2 hierarchy writable by this process (it needs root and a cgroup2 mount)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the cgroup2 test, but {why}")
        pytest.skip(why)
    group = cgroups._open_v2(parent / f"overlay-test-{os.getpid()}" / "job.1", cgroups.Limits())
    try:
        yield group
    finally:
        # A failed test may leave the job and its daemon behind: nothing outlives the test
        for pid in group.members(0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not group.members(0), timeout=5, what="the group to empty")
        group.remove()
        group.dirs[0].parent.rmdir()


def test_a_cgroup2_group_holds_a_job_and_its_escaped_daemon_and_kills_both(v2_group, tmp_path):
    assert v2_group.kind == "cgroup2"
    pids = tmp_path / "pids"
    # Given a job in the group that ignores SIGTERM, starts a daemon in a session of its
    # own (ignoring it too), then waits
    job = subprocess.Popen(["sh", "-c", f"trap '' TERM; setsid sleep 300 & echo $! > {pids}; sleep 300"],
                           preexec_fn=v2_group.join, start_new_session=True)
    try:
        wait_until(lambda: pids.exists() and pids.read_text().strip(), timeout=10, what="the daemon")
        daemon = int(pids.read_text())
        # Then the group knows both (the daemon left the job's process group, not its cgroup)
        wait_until(lambda: {job.pid, daemon} <= set(v2_group.members(job.pid)), timeout=5,
                   what="both in cgroup.procs")
        # (the daemon's setsid() runs a moment after its fork: wait for it, not for luck)
        wait_until(lambda: os.getpgid(daemon) != os.getpgid(job.pid), timeout=5,
                   what="the daemon's own session")
        # When the supervisor kills the group (SIGTERM, a grace, then SIGKILL for all at once)
        froze = []
        v2_group._freeze = froze.append  # type: ignore[method-assign]  # v1's way: not needed here
        assert v2_group.kill(job.pid, grace_s=0.5, reap=lambda: job.poll())
        assert froze == [], "cgroup.kill should have killed the group without freezing it"
        # Then nothing of the job is left, the daemon included, and the group can go
        assert job.wait(timeout=5) == -9
        deadline = time.monotonic() + 5
        while alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(daemon)
        assert v2_group.members(job.pid) == []
    finally:
        if job.poll() is None:  # a failed step: the fixture kills the group, this reaps
            job.kill()
            job.wait(timeout=5)
